package steer

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem steer -type steer_config steer ../../bpf/steer.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
