"""Checks of the deployment files: shell scripts, systemd units, Kubernetes and dstack
manifests, the Dockerfile, the generated settings reference and the measurement tool.
Nothing here needs Docker, TDX or a GPU."""
