#!/usr/bin/env bash
# Download official checkpoints for effsam2 (needs internet; effsam2 itself never downloads anything).
#
#   scripts/download_checkpoints.sh [DIR] [MODEL ...]     e.g.  scripts/download_checkpoints.sh checkpoints sam2.1_hiera_t
#
# Without MODEL names, downloads the four SAM 2.1 checkpoints. File names come from effsam2's own configs
# (`effsam2 models`), so a downloaded file is exactly what `--checkpoint` expects for that model.
set -euo pipefail
dir="${1:-checkpoints}"
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(sam2.1_hiera_t sam2.1_hiera_s sam2.1_hiera_b+ sam2.1_hiera_l)

SAM21_URL="https://dl.fbaipublicfiles.com/segment_anything_2/092824"
SAM20_URL="https://dl.fbaipublicfiles.com/segment_anything_2/072824"
ETAM_URL="https://huggingface.co/yunyangx/efficient-track-anything/resolve/main"

if command -v wget >/dev/null 2>&1; then fetch() { wget -c -O "$2" "$1"; }
elif command -v curl >/dev/null 2>&1; then fetch() { curl -L -C - -o "$2" "$1"; }
else echo "error: install wget or curl to download checkpoints" >&2; exit 1; fi

mkdir -p "$dir"
for model in "${models[@]}"; do
  info=$(python -c "import effsam2, sys; c = effsam2.get_config(sys.argv[1]); print(c.family, c.checkpoint_file)" "$model") \
    || { echo "error: unknown model $model (see: effsam2 models)" >&2; exit 2; }
  family=${info%% *}; file=${info#* }
  case "$family" in
    sam2.1) base="$SAM21_URL" ;;
    sam2) base="$SAM20_URL" ;;
    efficienttam) base="$ETAM_URL" ;;
    *) echo "error: no download location known for $model" >&2; exit 2 ;;
  esac
  echo "downloading $model -> $dir/$file"
  fetch "$base/$file" "$dir/$file.part" && mv "$dir/$file.part" "$dir/$file"
done
