#!/usr/bin/env bash
# Reference the hwnas cluster image by digest in every manifest (cluster/kuberay/*.yaml,
# cluster/launcher/gpu.yaml): the `image:` lines marked "# cluster/pin_image.sh" hold either the
# placeholder unpinned.invalid/hwnas:... (which no node can pull) or REPO@sha256:<digest>.
#
#   cluster/pin_image.sh REPO [docker build flags...]
#       pull the base image of cluster/Dockerfile and build FROM it by digest, push REPO:<tag>, read the
#       pushed digest (docker inspect .RepoDigests) and write REPO@sha256:... into the manifests
#   cluster/pin_image.sh --set REPO@sha256:<64 hex digits>
#       write a digest you got elsewhere (a CI build) into the manifests
#   cluster/pin_image.sh --check
#       exit 1, listing them, if any marked image is not pinned by digest; run it before `kubectl apply`
#       or `ray up` (a tag is refused too: tags move, digests do not)
#
# REPO is a repository without tag or digest, e.g. registry.example.com/team/hwnas. Needs docker (or a
# `docker` that is podman) logged in to that registry.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
FILES=("$HERE/kuberay/raycluster.yaml" "$HERE/kuberay/rayjob.yaml" "$HERE/launcher/gpu.yaml")
MARK='# cluster/pin_image.sh'
PINNED='^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$'

die() {  # MESSAGE [EXIT CODE]
  echo "pin_image.sh: $1" >&2
  exit "${2:-1}"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# "FILE:LINE IMAGE" for every marked image line
marked() {
  grep -nH -F "$MARK" "${FILES[@]}" | grep -E '^[^:]+:[0-9]+:\s*image:' |
    sed -E 's/^([^:]+):([0-9]+):\s*image:\s*"?([^" #]+)"?.*$/\1:\2 \3/'
}

check() {
  local bad=0 n=0 where image
  while read -r where image; do
    n=$((n + 1))
    if [[ ! "$image" =~ $PINNED ]]; then
      echo "not pinned by digest: $where: $image" >&2
      bad=1
    fi
  done < <(marked)
  [[ $n -gt 0 ]] || die "no image lines marked '$MARK' in ${FILES[*]}"
  [[ $bad == 0 ]] || die "run cluster/pin_image.sh REPO (build, push, pin) or --set REPO@sha256:... first"
  echo "pin_image.sh: all $n images are pinned by digest"
}

set_pin() {
  local ref="$1" f
  [[ "$ref" =~ $PINNED ]] || die "'$ref' is not REPO@sha256:<64 hex digits>" 2
  for f in "${FILES[@]}"; do
    sed -i -E "/$(printf '%s' "$MARK" | sed 's/[.\/]/\\&/g')/ s#^(\s*image:\s*)\"?[^\" #]+\"?#\1${ref}#" "$f"
  done
  echo "pin_image.sh: wrote $ref into ${FILES[*]#"$ROOT/"}"
  check
}

build() {
  local repo="$1"
  shift
  [[ "$repo" =~ ^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?(/[a-z0-9._-]+)+$|^[a-z0-9][a-z0-9._-]*$ && "$repo" != *@* ]] ||
    die "REPO must be a repository without tag or digest (e.g. registry.example.com/team/hwnas), got '$repo'" 2
  command -v docker >/dev/null || die "needs docker"
  local base_tag base tag ref
  base_tag="$(sed -n 's/^ARG RAY_IMAGE=//p' "$HERE/Dockerfile")"
  [[ -n "$base_tag" ]] || die "no 'ARG RAY_IMAGE=' in $HERE/Dockerfile"
  docker pull "$base_tag"
  base="$(docker inspect --format '{{index .RepoDigests 0}}' "$base_tag")"
  [[ "$base" =~ $PINNED ]] || die "could not read the digest of $base_tag (got '$base')"
  tag="$repo:ray2.60.0-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)"
  docker build -f "$HERE/Dockerfile" --build-arg "RAY_IMAGE=$base" -t "$tag" "$@" "$ROOT"
  docker push "$tag"
  # the digest the registry gave the pushed image, for this repository
  ref="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | grep -m1 "^$repo@" || true)"
  [[ -n "$ref" ]] || ref="$(docker inspect --format '{{index .RepoDigests 0}}' "$tag")"
  echo "pin_image.sh: built $tag FROM $base; pushed as $ref"
  set_pin "$ref"
}

case "${1:-}" in
  -h | --help) usage 0 ;;
  "") usage ;;
  --check) check ;;
  --set)
    [[ $# -eq 2 ]] || usage
    set_pin "$2"
    ;;
  -*) usage ;;
  *) build "$@" ;;
esac
