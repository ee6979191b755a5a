set terminal pngcairo size 900,500 noenhanced
set output 'phase1_entropy.png'
set title 'Routing entropy during training (KJV, tiny LM, phase 1)'
set xlabel 'step'
set ylabel 'normalised entropy H(α)/ln 3 (training batch)'
set key outside right
set grid
set yrange [0:1.05]
plot 'phase1_entropy.tsv' using 1:2 with lines lw 2 lc rgb '#2471a3' title 'bayes-s1', \
     'phase1_entropy.tsv' using 1:3 with lines lw 2 lc rgb '#17a589' title 'bayes-s2', \
     'phase1_entropy.tsv' using 1:4 with lines lw 2 lc rgb '#5dade2' title 'bayes-s3', \
     'phase1_entropy.tsv' using 1:5 with lines lw 2 lc rgb '#8e44ad' title 'free-s1', \
     'phase1_entropy.tsv' using 1:6 with lines lw 2 lc rgb '#d35400' title 'free-s2', \
     'phase1_entropy.tsv' using 1:7 with lines lw 2 lc rgb '#c0392b' title 'free-s3', \
     'phase1_entropy.tsv' using 1:8 with lines lw 2 lc rgb '#e67e22' title 'free-tuned-s1'
