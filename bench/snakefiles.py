"""The Snakemake anchor's workflow for the engine bench: the three analysis steps of the
G×S project as Snakemake scripts, and a Snakefile for each way of calling them (``shell``:
a fresh interpreter per job, as a user writes it; ``run``: in Snakemake's own process).
Data only; :mod:`engine_bench` writes them into the bench's work folder."""

from __future__ import annotations

_SMK_SAMPLE = """\
import sys
name, src, dst = sys.argv[1:4]
with open(src, encoding='utf-8') as f:
    rows = f.read().split()
nums = [float(x) for x in rows[1:] if x]
with open(dst, 'w', encoding='utf-8') as f:
    f.write('%s %d %r\\n' % (name, len(nums), sum(nums) / len(nums)))
"""

_SMK_GROUP = """\
import sys
name, dst, *srcs = sys.argv[1:]
lines, total = [], 0.0
for src in sorted(srcs):
    with open(src, encoding='utf-8') as f:
        sample, n, mean = f.read().split()
    total += float(mean)
    lines.append('%s %s' % (sample, mean))
with open(dst, 'w', encoding='utf-8') as f:
    f.write('%s samples=%d sum=%r\\n' % (name, len(srcs), total))
    f.write(''.join(line + '\\n' for line in lines))
"""

_SMK_SUMMARY = """\
import sys
dst, *srcs = sys.argv[1:]
out, grand, samples = [], 0.0, 0
for src in sorted(srcs):
    with open(src, encoding='utf-8') as f:
        head = f.readline().split()
    out.append(' '.join(head))
    samples += int(head[1].split('=')[1])
    grand += float(head[2].split('=')[1])
with open(dst, 'w', encoding='utf-8') as f:
    f.write('groups=%d samples=%d sum=%r\\n' % (len(srcs), samples, grand))
    f.write(''.join(line + '\\n' for line in out))
"""

# The same three steps over the same layout; samples found with glob_wildcards, so a dropped
# sample joins its group's inputs on the next invocation.
_SNAKEFILE_HEAD = """\
PY = config.get("python", "python")
FOUND = glob_wildcards("project/{group}/{sample}/raw/data.csv")
GROUPS = {}
for g, s in zip(FOUND.group, FOUND.sample):
    GROUPS.setdefault(g, []).append(s)

wildcard_constraints:
    group=r"group-[0-9]+",
    sample=r"sample-[0-9]+"

rule all:
    input: "project/summary/summary.txt"

"""

_SNAKEFILE_SHELL = (
    _SNAKEFILE_HEAD
    + """\
rule summary:
    input: [f"project/{g}/group_stats/group_stats.txt" for g in sorted(GROUPS)]
    output: "project/summary/summary.txt"
    params: py=PY
    shell: "{params.py} steps/summary.py {output} {input}"

rule group:
    input: lambda wc: [f"project/{wc.group}/{s}/stats/stats.txt" for s in sorted(GROUPS[wc.group])]
    output: "project/{group}/group_stats/group_stats.txt"
    params: py=PY
    shell: "{params.py} steps/group.py {wildcards.group} {output} {input}"

rule sample:
    input: "project/{group}/{sample}/raw/data.csv"
    output: "project/{group}/{sample}/stats/stats.txt"
    params: py=PY
    shell: "{params.py} steps/sample.py {wildcards.sample} {input} {output}"
"""
)

_SNAKEFILE_RUN = (
    _SNAKEFILE_HEAD
    + """\
rule summary:
    input: [f"project/{g}/group_stats/group_stats.txt" for g in sorted(GROUPS)]
    output: "project/summary/summary.txt"
    run:
        out, grand, samples = [], 0.0, 0
        for src in sorted(input):
            with open(src, encoding='utf-8') as f:
                head = f.readline().split()
            out.append(' '.join(head))
            samples += int(head[1].split('=')[1])
            grand += float(head[2].split('=')[1])
        with open(output[0], 'w', encoding='utf-8') as f:
            f.write('groups=%d samples=%d sum=%r\\n' % (len(input), samples, grand))
            f.write(''.join(line + '\\n' for line in out))

rule group:
    input: lambda wc: [f"project/{wc.group}/{s}/stats/stats.txt" for s in sorted(GROUPS[wc.group])]
    output: "project/{group}/group_stats/group_stats.txt"
    run:
        lines, total = [], 0.0
        for src in sorted(input):
            with open(src, encoding='utf-8') as f:
                sample, n, mean = f.read().split()
            total += float(mean)
            lines.append('%s %s' % (sample, mean))
        with open(output[0], 'w', encoding='utf-8') as f:
            f.write('%s samples=%d sum=%r\\n' % (wildcards.group, len(input), total))
            f.write(''.join(line + '\\n' for line in lines))

rule sample:
    input: "project/{group}/{sample}/raw/data.csv"
    output: "project/{group}/{sample}/stats/stats.txt"
    run:
        with open(input[0], encoding='utf-8') as f:
            rows = f.read().split()
        nums = [float(x) for x in rows[1:] if x]
        with open(output[0], 'w', encoding='utf-8') as f:
            f.write('%s %d %r\\n' % (wildcards.sample, len(nums), sum(nums) / len(nums)))
"""
)

SNAKEFILES = {"shell": _SNAKEFILE_SHELL, "run": _SNAKEFILE_RUN}
