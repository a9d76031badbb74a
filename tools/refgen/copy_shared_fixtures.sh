#!/bin/sh
# Copies the COCO evaluation goldens (pycocotools outputs on synthetic
# datasets, see their README) from the shared fixtures directory into the
# repository, where the tests read them. Run from the repository root:
#
#     tools/refgen/copy_shared_fixtures.sh [SHARED_DIR]   # default ../shared
#
# The three COCO photographs of SHARED_DIR/images are not copied: their
# README asks that they stay out of the repository (Flickr licences), so the
# image tests use procedural PNG and JPEG inputs instead
# (tools/refgen/backbone_goldens.py).
set -eu
src=${1:-../shared}
dst=runtime/coco/testdata/goldens
test -f "$src/coco-goldens/README.md" || { echo "$src/coco-goldens: not found" >&2; exit 1; }
rm -rf "$dst.tmp"
mkdir -p "$dst.tmp"
cp -R "$src/coco-goldens/." "$dst.tmp/"
chmod -R u+w "$dst.tmp"
rm -rf "$dst"
mv "$dst.tmp" "$dst"
echo "copied $src/coco-goldens -> $dst"
