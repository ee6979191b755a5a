set terminal pngcairo size 900,500 noenhanced
set output 'phase1_shares.png'
set title 'Expert shares per layer (mean α, validation split)'
set xlabel ''
set ylabel 'mean α'
set key outside right
set grid
set style data histograms
set style histogram rowstacked
set style fill solid 0.8
set boxwidth 0.7
set yrange [0:1]
set xtics rotate by -30
plot 'phase1_shares.tsv' using 2:xtic(1) title 'full' lc rgb '#c0392b', \
     '' using 3 title 'linear' lc rgb '#27ae60', \
     '' using 4 title 'local' lc rgb '#2471a3'
