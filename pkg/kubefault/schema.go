package kubefault

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Schema is an OpenAPI v3 schema, as the CRD holds it.
type Schema = map[string]any

// goDurationPattern matches Go durations without a sign ("300ms", "1m30s").
const goDurationPattern = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`

// maxDurationLength bounds duration strings ("1h30m0.5s" is 9), which also
// bounds the cost the API server estimates for the CEL rules on them.
const maxDurationLength = 32

// maxItems bounds every list of the fault model (fault.MaxPhases phases,
// toxics, server names, paths ...).
const maxItems = 100

// bounds are the numeric ranges admission can check, by message and field
// (the fault model checks them all again, with more rules).
var bounds = map[string][2]int64{
	"HTTPFault.port": {1, 65535}, "GrpcFault.port": {1, 65535}, "TcpFault.port": {1, 65535}, "NetworkFault.port": {0, 65535},
	"HTTPFault.error_code": {200, 599}, "HTTPPhase.error_code": {200, 599}, "ResponseRewrite.status": {200, 599},
	"GrpcFault.status_code": {1, 16}, "GrpcPhase.status_code": {1, 16},
	"FailFirst.attempts":  {1, 100},
	"BandwidthToxic.rate": {1, 1 << 40}, "LimitDataToxic.bytes": {1, 1 << 50}, "SlicerToxic.average_size": {1, 1 << 30},
}

// MessageSchema is the schema of a fault message's JSON as a Fault's spec
// holds it: protobuf JSON names, durations as Go durations, rates in
// [0, 1], one field of each oneof.
func MessageSchema(md protoreflect.MessageDescriptor) Schema {
	if md.FullName() == durationName {
		return Schema{"type": "string", "pattern": goDurationPattern, "maxLength": maxDurationLength}
	}
	props := Schema{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		props[fd.JSONName()] = fieldSchema(md, fd)
	}
	s := Schema{"type": "object"}
	if len(props) > 0 {
		s["properties"] = props
	}
	var rules []any
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		o := oneofs.Get(i)
		if o.IsSynthetic() {
			continue
		}
		var has, names []string
		for j := 0; j < o.Fields().Len(); j++ {
			n := o.Fields().Get(j).JSONName()
			has = append(has, "(has(self."+n+") ? 1 : 0)")
			names = append(names, n)
		}
		rules = append(rules, Schema{
			"rule":    strings.Join(has, " + ") + " <= 1",
			"message": "give at most one of " + strings.Join(names, ", "),
		})
	}
	if len(rules) > 0 {
		s["x-kubernetes-validations"] = rules
	}
	return s
}

func fieldSchema(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) Schema {
	if fd.IsMap() {
		return Schema{"type": "object", "additionalProperties": scalarSchema(md, fd.MapValue())}
	}
	var s Schema
	if fd.Message() != nil {
		s = MessageSchema(fd.Message())
	} else {
		s = scalarSchema(md, fd)
	}
	if fd.IsList() {
		// Bounded, so that the API server can bound the CEL rules' cost.
		return Schema{"type": "array", "items": s, "maxItems": maxItems}
	}
	return s
}

func scalarSchema(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) Schema {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return Schema{"type": "boolean"}
	case protoreflect.StringKind:
		return Schema{"type": "string"}
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		// Every fractional field of the fault model is a rate.
		return Schema{"type": "number", "minimum": 0, "maximum": 1}
	case protoreflect.EnumKind:
		var names []any
		vals := fd.Enum().Values()
		for i := 0; i < vals.Len(); i++ {
			if v := vals.Get(i); v.Number() != 0 {
				names = append(names, string(v.Name()))
			}
		}
		return Schema{"type": "string", "enum": names}
	case protoreflect.MessageKind:
		return MessageSchema(fd.Message())
	}
	s := Schema{"type": "integer", "minimum": 0}
	if b, ok := bounds[fmt.Sprintf("%s.%s", md.Name(), fd.Name())]; ok {
		s["minimum"], s["maximum"] = b[0], b[1]
	}
	return s
}
