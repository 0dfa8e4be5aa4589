package fault

// Network drops inbound packets and refuses new TCP connections in the
// target's namespace, in the kernel (no proxy).
type Network struct {
	Port     uint16 // 0 = all ports
	Protocol Protocol
	// DropRate is the share of matching inbound packets dropped.
	DropRate float64
	// ResetRate is the share of new TCP connections refused with a RST.
	ResetRate float64
}

func (f *Network) Kind() Kind   { return KindNetwork }
func (f *Network) Claim() Claim { return Claim{Port: f.Port, Protocol: f.Protocol} }

// Validate checks every field and names the API field of the first problem.
func (f *Network) Validate() error {
	switch f.Protocol {
	case ProtocolAll, ProtocolTCP, ProtocolUDP:
	default:
		return Invalid("protocol must be tcp, udp, or empty for all, got %q", f.Protocol)
	}
	if err := rate("dropRate", f.DropRate); err != nil {
		return err
	}
	if err := rate("resetRate", f.ResetRate); err != nil {
		return err
	}
	if f.ResetRate > 0 && f.Protocol == ProtocolUDP {
		return Invalid("resetRate applies to TCP connections; it cannot be used with protocol udp")
	}
	return nil
}
