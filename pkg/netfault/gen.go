package netfault

// BPF_INCLUDE is the multiarch include directory (asm/types.h); make
// generate sets it.

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem drop -type drop_config drop ../../bpf/drop.c -- -O2 -g -Wall -Werror -I$BPF_INCLUDE
//go:generate go tool bpf2go -tags linux -target bpfel -output-stem refuse -type refuse_config refuse ../../bpf/refuse.c -- -O2 -g -Wall -Werror -I$BPF_INCLUDE
