set terminal pngcairo size 900,500 noenhanced
set output 'frontier.png'
set title 'Validation loss (hard routing) against executed attention FLOPs'
set xlabel 'attention sub-layer FLOPs, hard routing / every token on full'
set ylabel 'val loss (nats/byte)'
set key outside right
set grid

plot 'frontier_prior-free.tsv' using 1:2 with linespoints pt 7 ps 1.5 lw 2 lc rgb '#c0392b' title 'prior-free', \
     'frontier_prior-free.tsv' using 1:2:4 with labels offset 0,1 font ',8' notitle, \
     'frontier_bayesian.tsv' using 1:2 with points pt 7 ps 1.5 lw 2 lc rgb '#2471a3' title 'bayesian', \
     'frontier_bayesian.tsv' using 1:2:4 with labels offset 0,1 font ',8' notitle
