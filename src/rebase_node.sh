# pytest-cloud, node side of the virtualenv rebase (src/rebase.rs): POSIX sh helpers for the
# generated `rebase_venv DIR`, which sync prepends to src/sync_node.sh when this node's copy
# of the managed venv files (pyvenv.cfg, bin/python*, the scripts in bin/) must change.
# A file is never changed in place: it is written anew beside itself and renamed over the
# old one, so a tree that shares inodes with this one (hard links) keeps its own.

# put_file PATH MODE: PATH gets stdin's content and octal MODE.
put_file() {
    _new="$1.pytest-cloud-new.$$"
    if cat >"$_new" && chmod "$2" "$_new" && mv -f -- "$_new" "$1"; then
        return 0
    fi
    rm -f -- "$_new"
    echo "rebase_error=cannot write $1"
    return 1
}

# put_link PATH TARGET: PATH becomes a symlink to TARGET.
put_link() {
    _new="$1.pytest-cloud-new.$$"
    rm -f -- "$_new"
    if ln -s -- "$2" "$_new" && mv -f -- "$_new" "$1"; then
        return 0
    fi
    rm -f -- "$_new"
    echo "rebase_error=cannot link $1 to $2"
    return 1
}
