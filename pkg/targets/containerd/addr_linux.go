package containerd

import (
	"net"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// addressOf returns the first global IPv4 address in the process's
// network namespace, or "".
func addressOf(pid int) string {
	ns, err := vnetns.GetFromPid(pid)
	if err != nil {
		return ""
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return ""
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() && !a.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			return a.IP.String()
		}
	}
	return ""
}
