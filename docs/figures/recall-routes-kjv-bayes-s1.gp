set terminal pngcairo size 1600,300 noenhanced
set output 'recall-routes-kjv-bayes-s1.png'
set title 'kjv-bayes-s1: executed expert per byte of a recall record (red full, green linear, blue local; bottom row: orange fact, purple query key, black value-predicting)'
set xlabel ''
set ylabel 'layer'
set key outside right
set grid
set xtics ('b' 0, 'B' 4, '=' 8, '8' 12, 'D' 16, 'Q' 20, '=' 24, '3' 28, 'r' 32, 'n' 36, ' ' 40, ' ' 44, 'R' 48, '9' 52, '#' 56, 'c' 60, 'e' 64, 'd' 68, 'o' 72, 'n' 76, ' ' 80, 'i' 84, ' ' 88, 'm' 92, 'h' 96, 'm' 100, 't' 104, ' ' 108, 'c' 112, ' ' 116, 'a' 120, 'v' 124, 'a' 128, 'n' 132, 'o' 136, 's' 140, 's' 144, ' ' 148, 'A' 152, 't' 156, 'e' 160, 's' 164, 's' 168, ' ' 172, ' ' 176, 't' 180, 'o' 184, 's' 188, 'Q' 192, ':' 196, '3' 200, ' ' 204, 't' 208, 'B' 212, ':' 216, '8' 220, '·' 224, '@' 228, 'B' 232, '3' 236, 'a' 240, ' ' 244, 'K' 248, 'a' 252) font ',7' scale 0 rotate by 90
set ytics 1
set yrange [-1.5:3.5]
set xrange [-0.5:255.5]
unset grid
plot 'recall-routes-kjv-bayes-s1.tsv' using 1:2:3:4:5 with rgbimage notitle
