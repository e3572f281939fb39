module example.com/hello

go 1.21

require example.com/greet v1.4.2

replace example.com/greet v1.4.2 => ../greet
