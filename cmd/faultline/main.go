// Command faultline injects, lists and revokes faults from a terminal or CI.
package main

import (
	"os"

	"github.com/faultline-dev/faultline/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
