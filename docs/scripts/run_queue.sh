#!/usr/bin/env bash
# One worker of a queue of runs that outlives sessions (how results/runs/ was filled).
#
#   nohup docs/scripts/run_queue.sh JOBS RUNS_DIR >> RUNS_DIR/worker-A.log 2>&1 &
#
# JOBS: one run a line, "<name> <hydra overrides of pfedhn.main ...>" ('#' starts a comment).
# Start one worker per core: each takes the first job that is neither finished nor held by
# another worker (a flock on RUNS_DIR/<name>.lock, released when its worker dies), runs it
# with $THREADS torch threads (default 1) in RUNS_DIR/<name> (the same command there resumes
# from the run's checkpoint), and goes on until no job is left. Two 1-thread workers finish
# more runs than one 2-thread one (5000 rounds of 100 clients, 2026-12-06: 49.3 and 49.8 min
# side by side at 1 thread, 30.4 min alone at 2: 1.23x the throughput); a worker alone (a
# session's last run, which must end with the session) runs at THREADS=2. The file is read
# again after every job, so jobs can be added while workers run. A file RUNS_DIR/PAUSE makes
# workers wait between jobs (touched once a session's last job has started, none follows it).
# Run it from a checkout kept for the workers (git worktree add --detach): edits elsewhere then
# leave their code, and the commit their results.json records, as they were.
# A job already landed in the checkout's results/runs/<name> or results/variants/<name> (or in
# <dir>/<name> for a dir of $LANDED_RUNS, a ':'-separated list) as finished is skipped too, so
# workers on a new machine with an empty RUNS_DIR do not run landed jobs again.
set -uo pipefail
set -f  # overrides such as method.sizes=[8,16,32] are no globs
jobs_file=$1
runs_dir=$2
python=${PYTHON:-python}
threads=${THREADS:-1}
mkdir -p "$runs_dir"

results=$(dirname "$0")/../../results
IFS=: read -ra landed_dirs <<< "${LANDED_RUNS:-$results/runs:$results/variants}"

finished() {
    local dir
    for dir in "$runs_dir" "${landed_dirs[@]}"; do
        grep -qs '"finished": true' "$dir/$1/results.json" && return 0
    done
    return 1
}

next_job() {
    local name overrides
    while read -r name overrides; do
        [[ -z $name || $name == \#* ]] && continue
        finished "$name" && continue
        # free now (the caller takes the lock for the job's duration; a lost race skips it)
        if flock -n "$runs_dir/$name.lock" true; then
            echo "$name $overrides"
            return 0
        fi
    done < "$jobs_file"
    return 1
}

while true; do
    while [[ -e $runs_dir/PAUSE ]]; do sleep 30; done
    job=$(next_job) || { echo "$(date -Is) no job left"; exit 0; }
    read -r name overrides <<< "$job"
    exec {held}>"$runs_dir/$name.lock" && flock -n "$held" || continue
    echo "$(date -Is) start $name: $overrides"
    # shellcheck disable=SC2086  # overrides are words on purpose
    OMP_NUM_THREADS=$threads "$python" -m pfedhn.main $overrides simulation.threads="$threads" \
        hydra.run.dir="$runs_dir/$name" > "$runs_dir/$name.log" 2>&1
    echo "$(date -Is) exit $? $name"
    exec {held}>&-
done
