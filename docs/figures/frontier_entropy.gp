set terminal pngcairo size 900,500 noenhanced
set output 'frontier_entropy.png'
set title 'Routing entropy during training (frontier runs)'
set xlabel 'step'
set ylabel 'normalised entropy H(α)/ln 3 (training batch)'
set key outside right
set grid
set yrange [0:1.05]
plot 'frontier_entropy.tsv' using 1:2 with lines lw 2 lc rgb '#2471a3' title 'bayes-b0.1-e0.01', \
     'frontier_entropy.tsv' using 1:3 with lines lw 2 lc rgb '#17a589' title 'bayes-b10-e0.01', \
     'frontier_entropy.tsv' using 1:4 with lines lw 2 lc rgb '#5dade2' title 'bayes-e0.001', \
     'frontier_entropy.tsv' using 1:5 with lines lw 2 lc rgb '#1abc9c' title 'bayes-e0.01', \
     'frontier_entropy.tsv' using 1:6 with lines lw 2 lc rgb '#34495e' title 'bayes-e0.1', \
     'frontier_entropy.tsv' using 1:7 with lines lw 2 lc rgb '#2471a3' title 'bayes-eps0.3', \
     'frontier_entropy.tsv' using 1:8 with lines lw 2 lc rgb '#e67e22' title 'free-l0.01', \
     'frontier_entropy.tsv' using 1:9 with lines lw 2 lc rgb '#f1948a' title 'free-l0.03', \
     'frontier_entropy.tsv' using 1:10 with lines lw 2 lc rgb '#8e44ad' title 'free-l0.1', \
     'frontier_entropy.tsv' using 1:11 with lines lw 2 lc rgb '#d35400' title 'free-l0.3'
