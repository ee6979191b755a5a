#!/usr/bin/env bash
# A routing heatmap (docs/results.md, "Surgery"): the routes of one retrieval
# prompt, from `metaattn eval --task T --routes FILE.tsv`, drawn with gnuplot
# — position across, block up, each cell its expert (full, linear, local);
# the needle and the question marked.
#   bench/surgery/heatmap.sh ROUTES.tsv OUT.png [FROM TO]   (positions FROM..TO; default all)
set -euo pipefail
tsv=${1:?usage: heatmap.sh ROUTES.tsv OUT.png [FROM TO]}; png=${2:?usage: heatmap.sh ROUTES.tsv OUT.png [FROM TO]}
head=$(head -1 "$tsv")
read -r n0 n1 q0 q1 < <(echo "$head" | sed -E 's/.*needle \[([0-9]+), ([0-9]+)\), question \[([0-9]+), ([0-9]+)\).*/\1 \2 \3 \4/')
from=${3:-0}; to=${4:-$(($(wc -l < "$tsv") - 2))}
title=$(echo "$head" | sed -E 's/^# ([a-z]+) prompt ([0-9]+) of ([0-9]+) tokens.*/\1 prompt, \3 tokens/')
gnuplot <<GP
set terminal pngcairo size 1400,520 font "sans,11"
set output "$png"
set title "$title: the expert of each position in each block (needle [$n0, $n1), question [$q0, $q1))"
set xlabel "position"; set ylabel "block"
set xrange [$from-0.5:$to+0.5]; set yrange [-0.5:29.5]
set palette defined (0 "#d62728", 1 "#1f77b4", 2 "#dddddd")
set palette maxcolors 3
set cbrange [-0.5:2.5]; set cbtics ("full" 0, "linear" 1, "local" 2)
set object 1 rect from $n0-0.5, graph 0 to $n1-0.5, graph 1 fc rgb "#2ca02c" fs transparent solid 0.15 noborder front
set object 2 rect from $q0-0.5, graph 0 to $q1-0.5, graph 1 fc rgb "#ff7f0e" fs transparent solid 0.15 noborder front
plot for [l=0:29] "< tail -n +2 '$tsv' | awk -v a=$from -v b=$to '\\\$1 >= a && \\\$1 <= b'" \
  using 1:(l):(column(l+2)) with points pt 5 ps 0.6 lc palette notitle
GP
echo "heatmap.sh: wrote $png"
