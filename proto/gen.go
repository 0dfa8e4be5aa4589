// Package proto holds faultline's protobuf definitions; the generated Go
// lives beside each .proto file.
package proto

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative faultline/v1/node.proto faultline/v1/gateway.proto"
