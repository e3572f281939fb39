#!/bin/sh
# Builds the rpm databases in this directory with the real rpm tools (Debian's `rpm` package,
# rpm 4.18): two small packages built by rpmbuild from the spec below, recorded with
# `rpm -i --justdb` into an sqlite database (rpmdb.sqlite). Debian's rpm has no NDB backend.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for spec in hello:2.12.1:3.el9:0:GPL-3.0-or-later libfoo:1.0:1.el9:2:MIT; do
  IFS=: read -r name version release epoch license <<EOT
$spec
EOT
  cat > "$work/$name.spec" <<SPEC
Name: $name
Version: $version
Release: $release
Epoch: $epoch
Summary: moorage scan test package
License: $license
BuildArch: x86_64
%description
A package that exists to be recorded in an rpm database.
%install
mkdir -p %{buildroot}/usr/share/$name
echo $name > %{buildroot}/usr/share/$name/README
%files
/usr/share/$name/README
SPEC
  rpmbuild --quiet --define "_topdir $work/top" --define "_build_id_links none" -bb "$work/$name.spec" >/dev/null
done
for backend in sqlite; do
  db="$work/db-$backend"
  mkdir -p "$db"
  rpm --define "_db_backend $backend" --dbpath "$db" --initdb
  rpm --define "_db_backend $backend" --dbpath "$db" -i --justdb --nodeps --noscripts --ignorearch --ignoreos "$work"/top/RPMS/x86_64/*.rpm
done
cp "$work/db-sqlite/rpmdb.sqlite" "$here/rpmdb.sqlite"
