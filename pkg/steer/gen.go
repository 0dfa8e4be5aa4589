package steer

// BPF_INCLUDE is the multiarch include directory (asm/types.h); make
// generate sets it.

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem steer -type steer_config steer ../../bpf/steer.c -- -O2 -g -Wall -Werror -I$BPF_INCLUDE
