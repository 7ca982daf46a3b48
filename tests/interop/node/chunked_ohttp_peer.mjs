// An independent chunked Oblivious HTTP peer (draft-ietf-ohai-chunked-ohttp-08) for the Python
// interop tests. HPKE comes from @hpke/core (+ X25519, X-Wing, ChaCha20-Poly1305 extensions),
// Binary HTTP from bhttp-js; the chunk framing, the key configuration parsing and the response
// key schedule (HKDF with node:crypto HMAC, AEAD with node:crypto) are written here from the
// draft and RFC 9458, not shared with the Python code.
//
// Talks newline-delimited JSON on stdin/stdout (hex for bytes):
//   node chunked_ohttp_peer.mjs client
//     <- {"key_configs", "kem_id", "aead_id", "request": {method, url, headers, body}, "chunk_size"}
//     -> {"encapsulated"}
//     <- {"response"}
//     -> {"status", "headers", "body", "chunks"}
//   node chunked_ohttp_peer.mjs gateway
//     <- {"kem_id", "key_id"}
//     -> {"key_config"}
//     <- {"encapsulated", "response": {status, headers, body}, "chunk_size"}
//     -> {"request": {method, url, headers, body}, "encapsulated_response"}
// Errors go out as {"error": message} with exit code 1.

import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import { createInterface } from "node:readline";

import { Aes128Gcm, Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";
import { BHttpDecoder, BHttpEncoder } from "bhttp-js";

const REQUEST_LABEL = "message/bhttp chunked request";
const RESPONSE_LABEL = "message/bhttp chunked response";
const FINAL = new TextEncoder().encode("final");
const EMPTY = new Uint8Array(0);

const KEMS = {
  0x0020: () => new DhkemX25519HkdfSha256(),
  0x647a: () => new XWing(),
};
const AEADS = {
  0x0001: { hpke: () => new Aes128Gcm(), node: "aes-128-gcm", nk: 16, nn: 12 },
  0x0002: { hpke: () => new Aes256Gcm(), node: "aes-256-gcm", nk: 32, nn: 12 },
  0x0003: { hpke: () => new Chacha20Poly1305(), node: "chacha20-poly1305", nk: 32, nn: 12 },
};
const TAG = 16;

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (text) => new Uint8Array(Buffer.from(text, "hex"));
const concat = (...parts) => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));

// QUIC variable-length integers (RFC 9000 section 16).
function encodeVarint(value) {
  if (value < 0x40) return Uint8Array.of(value);
  if (value < 0x4000) return Uint8Array.of(0x40 | (value >> 8), value & 0xff);
  if (value < 0x40000000) {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(value);
    out[0] |= 0x80;
    return new Uint8Array(out);
  }
  throw new Error("chunk too large for this peer");
}

function decodeVarint(bytes, offset) {
  if (offset >= bytes.length) return null;
  const size = 1 << (bytes[offset] >> 6);
  if (offset + size > bytes.length) return null;
  let value = bytes[offset] & 0x3f;
  for (let i = 1; i < size; i++) value = value * 256 + bytes[offset + i];
  return { value, next: offset + size };
}

// RFC 9458 section 3.1: one key configuration.
function parseKeyConfig(bytes) {
  const view = Buffer.from(bytes);
  const keyId = view[0];
  const kemId = view.readUInt16BE(1);
  if (!(kemId in KEMS)) throw new Error(`unsupported KEM ${kemId}`);
  const kem = KEMS[kemId]();
  const publicKey = bytes.slice(3, 3 + kem.publicKeySize);
  let offset = 3 + kem.publicKeySize;
  const symLength = view.readUInt16BE(offset);
  offset += 2;
  const symmetric = [];
  for (let at = offset; at < offset + symLength; at += 4) {
    symmetric.push({ kdfId: view.readUInt16BE(at), aeadId: view.readUInt16BE(at + 2) });
  }
  if (offset + symLength !== bytes.length) throw new Error("bad key configuration length");
  return { keyId, kemId, publicKey, symmetric };
}

// RFC 9458 section 3.2: application/ohttp-keys, each config behind a 2-byte length.
function parseKeyConfigs(bytes) {
  const view = Buffer.from(bytes);
  const configs = [];
  for (let at = 0; at < bytes.length; ) {
    const length = view.readUInt16BE(at);
    const config = bytes.subarray(at + 2, at + 2 + length);
    if (config.length !== length) throw new Error("truncated key configuration list");
    if (view.readUInt16BE(at + 3) in KEMS) configs.push(parseKeyConfig(config));
    at += 2 + length;
  }
  return configs;
}

function buildKeyConfig(keyId, kemId, publicKey, aeadIds) {
  const head = Buffer.alloc(3);
  head[0] = keyId;
  head.writeUInt16BE(kemId, 1);
  const sym = Buffer.alloc(2 + 4 * aeadIds.length);
  sym.writeUInt16BE(4 * aeadIds.length, 0);
  aeadIds.forEach((aeadId, i) => {
    sym.writeUInt16BE(0x0001, 2 + 4 * i);
    sym.writeUInt16BE(aeadId, 4 + 4 * i);
  });
  return concat(head, publicKey, sym);
}

function header(keyId, kemId, kdfId, aeadId) {
  const out = Buffer.alloc(7);
  out[0] = keyId;
  out.writeUInt16BE(kemId, 1);
  out.writeUInt16BE(kdfId, 3);
  out.writeUInt16BE(aeadId, 5);
  return new Uint8Array(out);
}

const info = (label, hdr) => concat(new TextEncoder().encode(label), Uint8Array.of(0), hdr);

function suiteFor(kemId, aeadId) {
  return new CipherSuite({ kem: KEMS[kemId](), kdf: new HkdfSha256(), aead: AEADS[aeadId].hpke() });
}

// HKDF-SHA256 (RFC 5869) from node:crypto HMAC.
const hkdfExtract = (salt, ikm) => new Uint8Array(createHmac("sha256", salt).update(ikm).digest());
function hkdfExpand(prk, infoBytes, length) {
  let block = EMPTY;
  const out = [];
  for (let i = 1; out.length * 32 < length; i++) {
    block = createHmac("sha256", prk).update(block).update(infoBytes).update(Uint8Array.of(i)).digest();
    out.push(block);
  }
  return new Uint8Array(Buffer.concat(out).subarray(0, length));
}

function responseKeys(aeadId, secret, enc, responseNonce) {
  const { nk, nn } = AEADS[aeadId];
  const prk = hkdfExtract(concat(enc, responseNonce), secret);
  const enc_ = new TextEncoder();
  return { key: hkdfExpand(prk, enc_.encode("key"), nk), nonce: hkdfExpand(prk, enc_.encode("nonce"), nn) };
}

function chunkNonce(baseNonce, counter) {
  const nonce = Buffer.from(baseNonce);
  let c = BigInt(counter);
  for (let i = nonce.length - 1; i >= 0 && c > 0n; i--) {
    nonce[i] ^= Number(c & 0xffn);
    c >>= 8n;
  }
  return nonce;
}

function aeadSeal(aeadId, key, nonce, aad, plaintext) {
  const cipher = createCipheriv(AEADS[aeadId].node, key, nonce, { authTagLength: TAG });
  cipher.setAAD(aad);
  return concat(cipher.update(plaintext), cipher.final(), cipher.getAuthTag());
}

function aeadOpen(aeadId, key, nonce, aad, sealed) {
  const decipher = createDecipheriv(AEADS[aeadId].node, key, nonce, { authTagLength: TAG });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG));
  return concat(decipher.update(sealed.subarray(0, sealed.length - TAG)), decipher.final());
}

// Split framed chunks: [{sealed, final}], the final one running to the end of `bytes`.
function splitChunks(bytes, offset) {
  const chunks = [];
  while (true) {
    const length = decodeVarint(bytes, offset);
    if (length === null) throw new Error("truncated: no final chunk");
    if (length.value === 0) {
      chunks.push({ sealed: bytes.subarray(length.next), final: true });
      return chunks;
    }
    const end = length.next + length.value;
    if (end > bytes.length) throw new Error("truncated chunk");
    if (length.value <= TAG) throw new Error("non-final chunk without data");
    chunks.push({ sealed: bytes.subarray(length.next, end), final: false });
    offset = end;
  }
}

function pieces(bytes, size) {
  const out = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

async function describeRequest(request) {
  return {
    method: request.method,
    url: request.url,
    headers: [...request.headers.entries()],
    body: hex(new Uint8Array(await request.arrayBuffer())),
  };
}

async function describeResponse(response) {
  return {
    status: response.status,
    headers: [...response.headers.entries()],
    body: hex(new Uint8Array(await response.arrayBuffer())),
  };
}

async function runClient(read, write) {
  const input = await read();
  const config = parseKeyConfigs(unhex(input.key_configs)).find((c) => c.kemId === input.kem_id);
  if (!config) throw new Error("no key configuration with this KEM");
  const aeadId = input.aead_id;
  if (!config.symmetric.some((s) => s.kdfId === 1 && s.aeadId === aeadId)) {
    throw new Error("the key configuration does not offer this AEAD");
  }
  const suite = suiteFor(config.kemId, aeadId);
  const hdr = header(config.keyId, config.kemId, 0x0001, aeadId);
  const sender = await suite.createSenderContext({
    recipientPublicKey: await suite.kem.deserializePublicKey(config.publicKey),
    info: info(REQUEST_LABEL, hdr),
  });
  const spec = input.request;
  const init = { method: spec.method, headers: spec.headers };
  if (spec.body) init.body = Buffer.from(spec.body, "hex");
  const bhttp = await new BHttpEncoder().encodeRequest(new Request(spec.url, init));
  const parts = [hdr, new Uint8Array(sender.enc)];
  for (const piece of pieces(bhttp, input.chunk_size)) {
    const sealed = new Uint8Array(await sender.seal(piece, EMPTY));
    parts.push(encodeVarint(sealed.length), sealed);
  }
  parts.push(Uint8Array.of(0), new Uint8Array(await sender.seal(EMPTY, FINAL)));
  const { nk, nn } = AEADS[aeadId];
  const secret = new Uint8Array(await sender.export(new TextEncoder().encode(RESPONSE_LABEL), Math.max(nk, nn)));
  write({ encapsulated: hex(concat(...parts)) });

  const reply = unhex((await read()).response);
  const nonceSize = Math.max(nk, nn);
  const keys = responseKeys(aeadId, secret, new Uint8Array(sender.enc), reply.subarray(0, nonceSize));
  const plain = [];
  const chunks = splitChunks(reply, nonceSize);
  chunks.forEach(({ sealed, final }, counter) => {
    plain.push(aeadOpen(aeadId, keys.key, chunkNonce(keys.nonce, counter), final ? FINAL : EMPTY, sealed));
  });
  const response = new BHttpDecoder().decodeResponse(concat(...plain));
  write({ ...(await describeResponse(response)), chunks: chunks.length });
}

async function runGateway(read, write) {
  const input = await read();
  const kemId = input.kem_id;
  const aeadIds = [0x0002, 0x0003, 0x0001];
  const keyPair = await KEMS[kemId]().generateKeyPair();
  const publicKey = new Uint8Array(await KEMS[kemId]().serializePublicKey(keyPair.publicKey));
  write({ key_config: hex(buildKeyConfig(input.key_id, kemId, publicKey, aeadIds)) });

  const message = await read();
  const bytes = unhex(message.encapsulated);
  const head = Buffer.from(bytes.subarray(0, 7));
  if (head[0] !== input.key_id || head.readUInt16BE(1) !== kemId || head.readUInt16BE(3) !== 1) {
    throw new Error("request header does not match the key configuration");
  }
  const aeadId = head.readUInt16BE(5);
  if (!aeadIds.includes(aeadId)) throw new Error("AEAD not offered");
  const suite = suiteFor(kemId, aeadId);
  const encEnd = 7 + suite.kem.encSize;
  const enc = bytes.subarray(7, encEnd);
  const recipient = await suite.createRecipientContext({
    recipientKey: keyPair.privateKey,
    enc,
    info: info(REQUEST_LABEL, bytes.subarray(0, 7)),
  });
  const plain = [];
  for (const { sealed, final } of splitChunks(bytes, encEnd)) {
    plain.push(new Uint8Array(await recipient.open(sealed, final ? FINAL : EMPTY)));
  }
  const request = new BHttpDecoder().decodeRequest(concat(...plain));

  const spec = message.response;
  const body = spec.body ? Buffer.from(spec.body, "hex") : null;
  const bhttp = await new BHttpEncoder().encodeResponse(
    new Response(body, { status: spec.status, headers: spec.headers }),
  );
  const { nk, nn } = AEADS[aeadId];
  const nonceSize = Math.max(nk, nn);
  const secret = new Uint8Array(await recipient.export(new TextEncoder().encode(RESPONSE_LABEL), nonceSize));
  const responseNonce = new Uint8Array(randomBytes(nonceSize));
  const keys = responseKeys(aeadId, secret, enc, responseNonce);
  const parts = [responseNonce];
  let counter = 0;
  for (const piece of pieces(bhttp, message.chunk_size)) {
    const sealed = aeadSeal(aeadId, keys.key, chunkNonce(keys.nonce, counter++), EMPTY, piece);
    parts.push(encodeVarint(sealed.length), sealed);
  }
  parts.push(Uint8Array.of(0), aeadSeal(aeadId, keys.key, chunkNonce(keys.nonce, counter), FINAL, EMPTY));
  write({ request: await describeRequest(request), encapsulated_response: hex(concat(...parts)) });
}

async function main() {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const read = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error("stdin closed");
    return JSON.parse(value);
  };
  const write = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
  const mode = process.argv[2];
  if (mode === "client") await runClient(read, write);
  else if (mode === "gateway") await runGateway(read, write);
  else throw new Error(`unknown mode ${mode}`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stdout.write(`${JSON.stringify({ error: String(error && error.message ? error.message : error) })}\n`);
    process.exit(1);
  },
);
