#!/usr/bin/env bash
# Install the built bundle (dist/aiba-studio) for one user, with a menu entry and an icon.
#   bash installer/install-linux.sh [--prefix DIR]              install (default DIR: ~/.local)
#   bash installer/install-linux.sh [--prefix DIR] --uninstall  remove what install put there
# Puts the bundle in DIR/lib/aiba-studio, the launcher link in DIR/bin, the desktop entry in
# DIR/share/applications and the icon in DIR/share/icons/hicolor/scalable/apps. --uninstall removes
# them and the folders that became empty (up to DIR). For a pip install the same entry and icon come
# from engine.desktop_install.install_desktop_entry().
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$HOME/.local"
action=install
while [ "$#" -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2;;
    --uninstall) action=uninstall; shift;;
    *) echo "install-linux: unknown option $1 (use --prefix DIR, --uninstall)" >&2; exit 2;;
  esac
done
prefix="${prefix%/}"
# The prefix goes into the entry's Exec key and a sed expression: keep it to plain characters.
case "$prefix" in *[\"\`\$\\\|%]*)
  echo "install-linux: the prefix must not contain \" \` \$ \\ | or %: $prefix" >&2; exit 2;;
esac
app="$prefix/lib/aiba-studio"
bin="$prefix/bin/aiba-studio"
desktop="$prefix/share/applications/aiba-studio.desktop"
icon="$prefix/share/icons/hicolor/scalable/apps/aiba-studio.svg"

if [ "$action" = uninstall ]; then
  rm -rf "$app"
  rm -f "$bin" "$desktop" "$icon"
  # Earlier versions ran update-desktop-database, which wrote mimeinfo.cache; with no other entry
  # left in the folder that cache only described this app.
  apps="$(dirname "$desktop")"
  if [ -f "$apps/mimeinfo.cache" ] && ! compgen -G "$apps/*.desktop" >/dev/null; then
    rm -f "$apps/mimeinfo.cache"
  fi
  for dir in "$(dirname "$app")" "$(dirname "$bin")" "$apps" "$(dirname "$icon")"; do
    while [ "$dir" != "$prefix" ] && [ -d "$dir" ] && rmdir "$dir" 2>/dev/null; do
      dir="$(dirname "$dir")"
    done
  done
  echo "install-linux: removed AIBA Studio from $prefix"
  exit 0
fi

if [ ! -x dist/aiba-studio/aiba-studio ]; then
  echo "install-linux: no bundle in dist/aiba-studio; build it first: bash installer/build.sh" >&2
  exit 1
fi
mkdir -p "$(dirname "$app")" "$(dirname "$bin")" "$(dirname "$desktop")" "$(dirname "$icon")"
rm -rf "$app.new"
cp -a dist/aiba-studio "$app.new"
rm -rf "$app"
mv "$app.new" "$app"
ln -sfn "$app/aiba-studio" "$bin"
cp resources/icons/aiba-studio.svg "$icon"
# Exec and TryExec get the absolute launcher path so the entry works without DIR/bin on PATH (Exec
# quoted, for folders with spaces). The entry has no MimeType, so no update-desktop-database.
sed -e "s|^Exec=aiba-studio|Exec=\"$app/aiba-studio\"|" -e "s|^TryExec=aiba-studio|TryExec=$app/aiba-studio|" \
  resources/desktop/aiba-studio.desktop > "$desktop"
echo "install-linux: installed to $app (launcher $bin, menu entry $desktop)"
