package kubefault

import (
	"google.golang.org/protobuf/proto"
)

//go:generate go run ../../internal/tools/crdgen -o ../../deploy/crd.yaml

var str = Schema{"type": "string"}

// specSchema is a Fault's spec (a plan step's too): the fault fields from
// the fault model's protobuf (MessageSchema), and CEL rules for what the
// OpenAPI schema cannot say, so that kubectl apply refuses an invalid one
// naming the field.
func specSchema() Schema {
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
		"duration": Schema{"type": "string", "pattern": goDurationPattern, "maxLength": maxDurationLength,
			"description": "How long the fault lasts from the Fault's creation, a Go duration from 1s to 24h.",
			"x-kubernetes-validations": []any{Schema{
				// The pattern reports malformed durations; the rule the range.
				"rule":    "!self.matches(r'" + goDurationPattern + "') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",
				"message": "duration must be from 1s to 24h",
			}}},
		"portName":   Schema{"type": "string", "description": "A named container (or, with service, Service) port instead of the fault's port."},
		"maxTargets": Schema{"type": "integer", "minimum": 0, "description": "Refuse the Fault when more pods match (default: faultlined's --fault-target-limit)."},
		"dryRun":     Schema{"type": "boolean", "description": "Resolve the targets into status; touch none."},
		"count": Schema{"type": "string", "pattern": `^[0-9]+(\.[0-9]+)?%$|^[1-9][0-9]*$`,
			"description": "Fault only some of the matching pods: a number (3) or a share (50%, at least one pod), the same ones on every node."},
		"lease": Schema{"type": "string", "pattern": goDurationPattern, "maxLength": maxDurationLength,
			"description": "End the fault when the annotation " + LeaseAnnotation + " has not changed for this long (1s to 1h): its holder renews it while it wants the fault.",
			"x-kubernetes-validations": []any{Schema{
				"rule":    "!self.matches(r'" + goDurationPattern + "') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))",
				"message": "lease must be from 1s to 1h",
			}}},
	}
	for _, k := range kinds {
		s := MessageSchema(k.msg().ProtoReflect().Descriptor())
		s["description"] = "A " + k.field + " fault: the fields of faultline's " + string(proto.MessageName(k.msg()).Name()) + ", durations as Go durations."
		spec[k.field] = s
	}
	return Schema{
		"type": "object", "required": []any{"duration"}, "properties": spec,
		"x-kubernetes-validations": []any{
			Schema{"rule": "(has(self.http) ? 1 : 0) + (has(self.grpc) ? 1 : 0) + (has(self.tcp) ? 1 : 0) + (has(self.network) ? 1 : 0) == 1",
				"message": "give exactly one fault: http, grpc, tcp or network"},
			Schema{"rule": "has(self.selector) != has(self.service)", "message": "give selector or service (the target pods in the Fault's namespace), one of the two"},
		},
	}
}

// nodesSchema is status.nodes: each node's entry, written by that node.
func nodesSchema() Schema {
	counters := Schema{"type": "object", "additionalProperties": Schema{"type": "integer", "format": "int64"}}
	target := Schema{"type": "object", "required": []any{"pod", "state"}, "properties": Schema{
		"pod": str, "state": str, "id": str, "endReason": str, "message": str, "counters": counters,
	}}
	node := Schema{"type": "object", "required": []any{"node", "phase"}, "properties": Schema{
		"node": str, "phase": str, "message": str, "endReason": str, "refreshed": str,
		"startTime": Schema{"type": "string", "format": "date-time"}, "endTime": Schema{"type": "string", "format": "date-time"},
		"targets": Schema{"type": "array", "items": target, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"pod"}},
	}}
	return Schema{"type": "array", "items": node, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"node"}}
}

// CRD returns the Fault CustomResourceDefinition.
func CRD() Schema {
	spec := specSchema()
	spec["x-kubernetes-validations"] = append(spec["x-kubernetes-validations"].([]any),
		Schema{"rule": "self == oldSelf", "message": "a Fault's spec cannot change: delete the Fault and create another"})
	root := Schema{
		"type":     "object",
		"required": []any{"spec"},
		"properties": Schema{
			"apiVersion": str, "kind": str, "metadata": Schema{"type": "object"},
			"spec":   spec,
			"status": Schema{"type": "object", "properties": Schema{"nodes": nodesSchema()}},
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

// PlanCRD returns the FaultPlan CustomResourceDefinition (cluster-scoped):
// its steps are Fault specs with a name, a namespace and a start offset.
func PlanCRD() Schema {
	step := specSchema()
	props := step["properties"].(Schema)
	delete(props, "lease") // the plan's lease is every step's
	props["name"] = Schema{"type": "string", "description": "The step's name in the plan's status.", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
	props["namespace"] = Schema{"type": "string", "description": "The namespace of the step's target pods."}
	props["start"] = Schema{"type": "string", "pattern": goDurationPattern, "maxLength": maxDurationLength, "description": "The step's offset from the plan's creation (default 0s); its duration counts from there.",
		"x-kubernetes-validations": []any{Schema{
			"rule":    "!self.matches(r'" + goDurationPattern + "') || duration(self) <= duration('24h')",
			"message": "start must be at most 24h",
		}}}
	step["required"] = []any{"name", "namespace", "duration"}
	root := Schema{
		"type":     "object",
		"required": []any{"spec"},
		"properties": Schema{
			"apiVersion": str, "kind": str, "metadata": Schema{"type": "object"},
			"spec": Schema{
				"type": "object", "required": []any{"steps"},
				"properties": Schema{
					"steps": Schema{"type": "array", "minItems": 1, "maxItems": MaxPlanSteps, "items": step,
						"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"name"}},
					"lease": Schema{"type": "string", "pattern": goDurationPattern, "maxLength": maxDurationLength,
						"description": "End every step when the annotation " + LeaseAnnotation + " has not changed for this long (1s to 1h)."},
				},
				"x-kubernetes-validations": []any{
					Schema{"rule": "self == oldSelf", "message": "a FaultPlan's spec cannot change: delete the plan and create another"},
				},
			},
			"status": Schema{"type": "object", "properties": Schema{
				"steps": Schema{"type": "array", "items": Schema{"type": "object", "required": []any{"name"}, "properties": Schema{
					"name": str, "nodes": nodesSchema(),
				}}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"name"}},
			}},
		},
	}
	return Schema{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   Schema{"name": PlanResource + "." + Group},
		"spec": Schema{
			"group": Group,
			"scope": "Cluster",
			"names": Schema{"kind": PlanKind, "listKind": PlanKind + "List", "plural": PlanResource, "singular": "faultplan", "categories": []any{"faultline"}},
			"versions": []any{Schema{
				"name": Version, "served": true, "storage": true,
				"subresources": Schema{"status": Schema{}},
				"additionalPrinterColumns": []any{
					Schema{"name": "Steps", "type": "string", "jsonPath": ".spec.steps[*].name"},
					Schema{"name": "Phases", "type": "string", "jsonPath": ".status.steps[*].nodes[*].phase"},
					Schema{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
				},
				"schema": Schema{"openAPIV3Schema": root},
			}},
		},
	}
}
