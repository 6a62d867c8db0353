"""Tests of the container image and the Kubernetes manifests, offline: no cluster, no Docker."""
