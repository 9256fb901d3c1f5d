#!/usr/bin/env bash
# Builds a Swiftlet unikernel: guest/build.sh guest/examples/<name> -o <file> [--no-sse]
#                       or the benchmark floor: guest/build.sh --floor -o <file>
# Compiles kit/*.swift, kit/net/*.swift and the example's *.swift as one
# Embedded Swift module, assembles kit/entry.S, links with ld.lld and strips.
# Same inputs give the same bytes (no timestamps; source paths are mapped).
set -euo pipefail

GUEST="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS=/opt/swift/usr/bin
MAX_BYTES=$((256 * 1024))

usage() { echo "usage: $0 (<example-dir> | --floor) -o <output> [--no-sse]" >&2; exit 2; }

example="" output="" floor=0 nosse=0
while [ $# -gt 0 ]; do
    case "$1" in
        -o) [ $# -ge 2 ] || usage; output="$2"; shift 2 ;;
        --floor) floor=1; shift ;;
        --no-sse) nosse=1; shift ;;
        -h|--help) usage ;;
        -*) echo "build.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$example" ] || usage; example="$1"; shift ;;
    esac
done
[ -n "$output" ] || usage
[ "$floor" = 1 ] || [ -n "$example" ] || usage

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# swiftc leaves a TemporaryDirectory.* behind in $TMPDIR: keep it in ours.
export TMPDIR="$work"

if [ "$floor" = 1 ]; then
    "$TOOLS/clang" --target=x86_64-unknown-none-elf -c "$GUEST/floor/floor.S" -o "$work/floor.o"
    "$TOOLS/ld.lld" -static -nostdlib --build-id=none -T "$GUEST/floor/linker.ld" "$work/floor.o" -o "$work/kernel"
else
    [ -d "$example" ] || { echo "build.sh: no such example directory: $example" >&2; exit 1; }
    example="$(cd "$example" && pwd)"
    shopt -s nullglob
    # Sorted file lists: the module's contents must not depend on readdir order.
    sources=()
    while IFS= read -r file; do sources+=("$file"); done < <(
        printf '%s\n' "$GUEST"/kit/*.swift "$GUEST"/kit/net/*.swift "$example"/*.swift | LC_ALL=C sort)
    app_sources=("$example"/*.swift)
    [ ${#app_sources[@]} -gt 0 ] || { echo "build.sh: no .swift files in $example" >&2; exit 1; }

    swift_flags=(
        -enable-experimental-feature Embedded -enable-experimental-feature Extern
        -target x86_64-unknown-none-elf -wmo -Osize -parse-as-library -swift-version 6
        -module-name Swiftlet
        -Xfrontend -disable-stack-protector -Xfrontend -function-sections
        -Xllvm -disable-loop-idiom-all
        -file-prefix-map "$GUEST=/swiftlet/guest" -file-prefix-map "$work=/swiftlet/build"
    )
    asm_flags=(--target=x86_64-unknown-none-elf -ffile-prefix-map="$GUEST=/swiftlet/guest")
    if [ "$nosse" = 1 ]; then
        # Swift takes its target features from the clang options.
        swift_flags+=(-Xcc -mno-sse -Xcc -mno-sse2 -Xcc -mno-mmx)
        asm_flags+=(-DKIT_NO_SSE)
    fi
    (cd "$work" && "$TOOLS/swiftc" "${swift_flags[@]}" -c "${sources[@]}" -o "$work/swiftlet.o")
    "$TOOLS/clang" "${asm_flags[@]}" -c "$GUEST/kit/entry.S" -o "$work/entry.o"
    "$TOOLS/ld.lld" -static -nostdlib --gc-sections --build-id=none -T "$GUEST/kit/linker.ld" \
        "$work/entry.o" "$work/swiftlet.o" \
        /opt/swift/usr/lib/swift/embedded/x86_64-unknown-none-elf/libswiftUnicodeDataTables.a \
        -o "$work/kernel"
fi
"$TOOLS/llvm-objcopy" --strip-all "$work/kernel"
size=$(stat -c %s "$work/kernel")
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "build.sh: kernel is $size bytes, over the $MAX_BYTES-byte limit" >&2
    exit 1
fi
mkdir -p "$(dirname "$output")"
cp "$work/kernel" "$output"
echo "build.sh: $output ($size bytes)"
