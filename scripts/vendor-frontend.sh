#!/usr/bin/env bash
# Re-create static/vendor/ (the chat page's markdown renderer, sanitiser and code highlighter,
# and the usage page's charts)
# from the npm registry, at pinned versions.
#
# The app never runs this: the files it writes are committed, so the pages need no build step and
# no internet. Run it only to check the committed files against the registry or, after editing
# the pins below, to upgrade a library; see static/vendor/README.md and docs/frontend.md.
#
#   scripts/vendor-frontend.sh          # then: git diff --stat static/vendor/
#
# Needs npm (it only downloads: `npm pack`, no install scripts run) and node. Each tarball is
# checked against the sha512 integrity pinned here before anything is copied, so a changed or
# substituted package stops the script.
set -euo pipefail

MARKED_VERSION=18.2.1
MARKED_INTEGRITY=sha512-ii4bxCTCqqwpT86XZWgJNs+ZnAIZksmLGYMViWA7PDIXYIeNo1x6cDdX3JOip9NM/cI6p8z57FxliACboTruMA==
DOMPURIFY_VERSION=3.4.18
DOMPURIFY_INTEGRITY=sha512-ofe3wI/uNm68HInABYFJYqQxRw1EaKAjNdrFVKqjUY+UZurvNd2L/HuQe097s/4RivWiZyP6tT7aoT8atjfhwg==
HIGHLIGHTJS_VERSION=11.12.0
HIGHLIGHTJS_INTEGRITY=sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH0zgiNDEGjpDw==
UPLOT_VERSION=1.6.32
UPLOT_INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==

root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# fetch SPEC INTEGRITY DIR: download SPEC's tarball, check it, unpack it into $work/DIR.
fetch() {
    local spec="$1" integrity="$2" dir="$3" tarball actual
    tarball="$(cd "$work" && npm pack --silent "$spec" | tail -n 1)"
    actual="sha512-$(node -e '
        const data = require("fs").readFileSync(process.argv[1]);
        process.stdout.write(require("crypto").createHash("sha512").update(data).digest("base64"));
    ' "$work/$tarball")"
    if [ "$actual" != "$integrity" ]; then
        echo "$spec: the tarball's integrity is $actual, not the pinned $integrity; stopping." >&2
        exit 1
    fi
    mkdir -p "$work/$dir"
    tar -xzf "$work/$tarball" -C "$work/$dir" --strip-components=1
}

# copy DIR SRC DEST: copy one file of an unpacked package into static/vendor/.
copy() {
    mkdir -p "$(dirname "$vendor/$3")"
    cp "$work/$1/$2" "$vendor/$3"
}

fetch "marked@$MARKED_VERSION" "$MARKED_INTEGRITY" marked
fetch "dompurify@$DOMPURIFY_VERSION" "$DOMPURIFY_INTEGRITY" dompurify
fetch "@highlightjs/cdn-assets@$HIGHLIGHTJS_VERSION" "$HIGHLIGHTJS_INTEGRITY" highlightjs
fetch "uplot@$UPLOT_VERSION" "$UPLOT_INTEGRITY" uplot

# Start from nothing so a file dropped by an upgrade does not linger; README.md is ours.
find "$vendor" -mindepth 1 ! -name README.md -delete 2>/dev/null || true

copy marked LICENSE marked/LICENSE
copy marked lib/marked.esm.js marked/marked.esm.js
copy marked lib/marked.esm.js.map marked/marked.esm.js.map

# DOMPurify is dual-licensed; both texts ship with it.
copy dompurify LICENSE dompurify/LICENSE
copy dompurify LICENSE-MPL dompurify/LICENSE-MPL
copy dompurify dist/purify.es.mjs dompurify/purify.es.mjs
copy dompurify dist/purify.es.mjs.map dompurify/purify.es.mjs.map

# The prebuilt browser bundle (core + the common languages) as an ES module, and one theme.
copy highlightjs LICENSE highlightjs/LICENSE
copy highlightjs es/highlight.min.js highlightjs/highlight.min.js
copy highlightjs styles/github.min.css highlightjs/styles/github.min.css

# The usage page's charts: the ES module and its stylesheet.
copy uplot LICENSE uplot/LICENSE
copy uplot dist/uPlot.esm.js uplot/uPlot.esm.js
copy uplot dist/uPlot.min.css uplot/uPlot.min.css

echo "static/vendor/: uPlot $UPLOT_VERSION, marked $MARKED_VERSION, DOMPurify $DOMPURIFY_VERSION, highlight.js $HIGHLIGHTJS_VERSION"
