// Package deploy holds the tests of the deployment files: the Dockerfile,
// docker-compose.yml with .env.example, and the Kubernetes manifests of
// deploy/k8s with the alert rules. They check what an operator relies on
// (hardening, health probes, schedules, volumes, alerts) and that every
// setting the files give a command is one the command knows, as its --help
// lists it. Nothing runs Docker or a cluster: the files are loaded with the
// libraries docker compose and kustomize are built on.
package deploy
