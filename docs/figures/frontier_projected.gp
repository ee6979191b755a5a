set terminal pngcairo size 900,500 noenhanced
set output 'frontier_projected.png'
set title 'Validation loss (hard routing) against projected cost'
set xlabel 'projected hard cost, % of all-full (costs 1, 0.15, 0.30)'
set ylabel 'val loss (nats/byte)'
set key outside right
set grid

plot 'frontier_prior-free_projected.tsv' using 5:2 with linespoints pt 7 ps 1.5 lw 2 lc rgb '#c0392b' title 'prior-free', \
     'frontier_prior-free_projected.tsv' using 5:2:4 with labels offset 0,1 font ',8' notitle, \
     'frontier_bayesian_projected.tsv' using 5:2 with points pt 7 ps 1.5 lw 2 lc rgb '#2471a3' title 'bayesian', \
     'frontier_bayesian_projected.tsv' using 5:2:4 with labels offset 0,1 font ',8' notitle
