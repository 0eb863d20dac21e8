#!/usr/bin/env bash
# Install the Debian packages of the services the tests start (Slurm, munge, PostgreSQL) and the browser
# the GUI tests drive (Chromium, through Playwright) when missing.
# Idempotent: installs only what is missing, runs `apt-get update` at most once. Without root
# (or without apt-get) it installs nothing and says so: the service tests then skip, unless
# CRYOWEAVE_REQUIRE_SERVICES=1 makes a missing service (or browser) a failure.
set -euo pipefail

declare -A binary_of=([slurmctld]=slurmctld [slurmd]=slurmd [munge]=munged [slurm-client]=sbatch
                      [chromium]=chromium)
missing=()
for package in "${!binary_of[@]}"; do
    command -v "${binary_of[$package]}" >/dev/null 2>&1 || missing+=("$package")
done
# PostgreSQL for the database contract tests: initdb on PATH or in Debian's versioned folder
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: not root (or no apt-get): not installing ${missing[*]};" \
         "the Slurm and browser tests will skip" >&2
    exit 0
fi
echo "ensure-services: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
