package kubefault

import (
	"google.golang.org/protobuf/proto"
)

//go:generate go run ../../internal/tools/crdgen -o ../../deploy/crd.yaml

// CRD returns the Fault CustomResourceDefinition: the spec's fault fields
// from the fault model's protobuf (MessageSchema), and CEL rules for what
// the OpenAPI schema cannot say, so that kubectl apply refuses an invalid
// Fault naming the field.
func CRD() Schema {
	str := Schema{"type": "string"}
	spec := Schema{
		"selector": Schema{
			"type":        "object",
			"description": "The target pods in the Fault's namespace, by label.",
			"properties": Schema{
				"matchLabels": Schema{"type": "object", "additionalProperties": str},
				"matchExpressions": Schema{"type": "array", "items": Schema{
					"type": "object", "required": []any{"key", "operator"},
					"properties": Schema{
						"key":      str,
						"operator": Schema{"type": "string", "enum": []any{"In", "NotIn", "Exists", "DoesNotExist"}},
						"values":   Schema{"type": "array", "items": str},
					},
				}},
			},
		},
		"service": Schema{"type": "string", "description": "The target pods: those behind this Service of the Fault's namespace."},
		"duration": Schema{"type": "string", "pattern": goDurationPattern,
			"description": "How long the fault lasts from the Fault's creation, a Go duration from 1s to 24h.",
			"x-kubernetes-validations": []any{Schema{
				// The pattern reports malformed durations; the rule the range.
				"rule":    "!self.matches(r'" + goDurationPattern + "') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",
				"message": "duration must be from 1s to 24h",
			}}},
		"portName":   Schema{"type": "string", "description": "A named container (or, with service, Service) port instead of the fault's port."},
		"maxTargets": Schema{"type": "integer", "minimum": 0, "description": "Refuse the Fault when more pods match (default: faultlined's --fault-target-limit)."},
		"dryRun":     Schema{"type": "boolean", "description": "Resolve the targets into status; touch none."},
	}
	for _, k := range kinds {
		s := MessageSchema(k.msg().ProtoReflect().Descriptor())
		s["description"] = "A " + k.field + " fault: the fields of faultline's " + string(proto.MessageName(k.msg()).Name()) + ", durations as Go durations."
		spec[k.field] = s
	}
	counters := Schema{"type": "object", "additionalProperties": Schema{"type": "integer", "format": "int64"}}
	target := Schema{"type": "object", "required": []any{"pod", "state"}, "properties": Schema{
		"pod": str, "state": str, "id": str, "endReason": str, "message": str, "counters": counters,
	}}
	node := Schema{"type": "object", "required": []any{"node", "phase"}, "properties": Schema{
		"node": str, "phase": str, "message": str, "endReason": str,
		"startTime": Schema{"type": "string", "format": "date-time"}, "endTime": Schema{"type": "string", "format": "date-time"},
		"targets": Schema{"type": "array", "items": target, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"pod"}},
	}}
	root := Schema{
		"type":     "object",
		"required": []any{"spec"},
		"properties": Schema{
			"apiVersion": str, "kind": str, "metadata": Schema{"type": "object"},
			"spec": Schema{
				"type": "object", "required": []any{"duration"}, "properties": spec,
				"x-kubernetes-validations": []any{
					Schema{"rule": "(has(self.http) ? 1 : 0) + (has(self.grpc) ? 1 : 0) + (has(self.tcp) ? 1 : 0) + (has(self.network) ? 1 : 0) == 1",
						"message": "give exactly one fault: http, grpc, tcp or network"},
					Schema{"rule": "has(self.selector) != has(self.service)", "message": "give selector or service (the target pods in the Fault's namespace), one of the two"},
					Schema{"rule": "self == oldSelf", "message": "a Fault's spec cannot change: delete the Fault and create another"},
				},
			},
			"status": Schema{"type": "object", "properties": Schema{
				"nodes": Schema{"type": "array", "items": node, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"node"}},
			}},
		},
	}
	return Schema{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   Schema{"name": Resource + "." + Group},
		"spec": Schema{
			"group": Group,
			"scope": "Namespaced",
			"names": Schema{"kind": Kind, "listKind": Kind + "List", "plural": Resource, "singular": "fault", "categories": []any{"faultline"}},
			"versions": []any{Schema{
				"name": Version, "served": true, "storage": true,
				"subresources": Schema{"status": Schema{}},
				"additionalPrinterColumns": []any{
					Schema{"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
					Schema{"name": "Phase", "type": "string", "jsonPath": ".status.nodes[*].phase"},
					Schema{"name": "Nodes", "type": "string", "jsonPath": ".status.nodes[*].node", "priority": 1},
					Schema{"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun", "priority": 1},
					Schema{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
				},
				"schema": Schema{"openAPIV3Schema": root},
			}},
		},
	}
}
