set terminal pngcairo size 1100,260 noenhanced
set output 'heatmap-phase1-free-tuned-s1.png'
set title 'phase1/free-tuned-s1: alpha per byte and layer (red full, green linear, blue local)'
set xlabel ''
set ylabel 'layer'
set key outside right
set grid
set xtics (' ' 0, 'B' 1, 'a' 2, 'c' 3, 'k' 4, 'b' 5, 'i' 6, 't' 7, 'e' 8, 'r' 9, 's' 10, ',' 11, ' ' 12, 'h' 13, 'a' 14, 't' 15, 'e' 16, 'r' 17, 's' 18, ' ' 19, 'o' 20, 'f' 21, ' ' 22, 'G' 23, 'o' 24, 'd' 25, ',' 26, ' ' 27, 'd' 28, 'e' 29, 's' 30, 'p' 31, 'i' 32, 't' 33, 'e' 34, 'f' 35, 'u' 36, 'l' 37, ',' 38, ' ' 39, 'p' 40, 'r' 41, 'o' 42, 'u' 43, 'd' 44, ',' 45, ' ' 46, 'b' 47, 'o' 48, 'a' 49, 's' 50, 't' 51, 'e' 52, 'r' 53, 's' 54, ',' 55, ' ' 56, 'i' 57, 'n' 58, 'v' 59, 'e' 60, 'n' 61, 't' 62, 'o' 63) font ',9' scale 0
set ytics 1
set yrange [-0.5:3.5]
set xrange [-0.5:63.5]
unset grid
plot 'heatmap-phase1-free-tuned-s1.tsv' using 1:2:3:4:5 with rgbimage notitle
