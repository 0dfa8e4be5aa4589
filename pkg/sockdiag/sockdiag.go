// Package sockdiag finds and destroys a namespace's established TCP
// connections with the kernel's sock_diag netlink interface (SOCK_DESTROY
// needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN in the namespace).
//
// Destroying the server side of a connection sends the client a reset, so a
// keep-alive client that connected before a fault reconnects, and the new
// connection is steered through the fault proxy. No iptables are involved.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/pkg/netns"
)

const tcpEstablished = 1

// DestroyEstablished resets the established TCP connections of ns whose
// local port is port, except those for which keep returns true. It returns
// how many it destroyed.
func DestroyEstablished(ns *netns.Handle, port uint16, keep func(remote netip.Addr) bool) (int, error) {
	destroyed := 0
	err := ns.Do(func() error {
		var errs []error
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			socks, err := netlink.SocketDiagTCP(family)
			if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
				errs = append(errs, fmt.Errorf("list tcp sockets: %w", err))
				continue
			}
			for _, s := range socks {
				if s.State != tcpEstablished || s.ID.SourcePort != port {
					continue
				}
				remote, _ := netip.AddrFromSlice(s.ID.Destination)
				if keep != nil && keep(remote.Unmap()) {
					continue
				}
				if err := destroy(s); err != nil {
					errs = append(errs, fmt.Errorf("destroy %s:%d: %w", remote, s.ID.DestinationPort, err))
					continue
				}
				destroyed++
			}
		}
		return errors.Join(errs...)
	})
	return destroyed, err
}

func destroy(s *netlink.Socket) error {
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddData(destroyRequest{s})
	_, err := req.Execute(unix.NETLINK_INET_DIAG, 0)
	return err
}

// destroyRequest serialises struct inet_diag_req_v2 for one socket, the
// cookie from the dump making the match exact (netlink's own SocketDestroy
// handles IPv4 only).
type destroyRequest struct{ s *netlink.Socket }

func (r destroyRequest) Len() int { return 56 }

func (r destroyRequest) Serialize() []byte {
	b := make([]byte, 56)
	b[0] = r.s.Family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], 1<<tcpEstablished)
	binary.BigEndian.PutUint16(b[8:], r.s.ID.SourcePort)
	binary.BigEndian.PutUint16(b[10:], r.s.ID.DestinationPort)
	copy(b[12:28], ipBytes(r.s.Family, r.s.ID.Source))
	copy(b[28:44], ipBytes(r.s.Family, r.s.ID.Destination))
	binary.NativeEndian.PutUint32(b[44:], r.s.ID.Interface)
	binary.NativeEndian.PutUint32(b[48:], r.s.ID.Cookie[0])
	binary.NativeEndian.PutUint32(b[52:], r.s.ID.Cookie[1])
	return b
}

func ipBytes(family uint8, ip net.IP) []byte {
	if family == unix.AF_INET {
		return ip.To4()
	}
	return ip.To16()
}
