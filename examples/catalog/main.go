// Command catalog is the demo's dependency: it serves ingredients over
// HTTP on :8080.
//
//	GET /ingredients/{id}  one ingredient as JSON
//	GET /health            200 "ok"
//
// and gRPC on :9000 (GRPC_LISTEN): the standard health service and server
// reflection, for the gRPC fault examples.
package main

import (
	"encoding/json"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

var ingredients = []string{"basil", "tomato", "mozzarella", "olive oil", "garlic", "oregano", "pepper", "salt"}

func main() {
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	name, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ingredients/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil || id < 0 {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": id, "name": ingredients[id%len(ingredients)], "served_by": name})
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	grpcAddr := os.Getenv("GRPC_LISTEN")
	if grpcAddr == "" {
		grpcAddr = ":9000"
	}
	gln, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)
	go gs.Serve(gln)
	log.Printf("catalog listening on %s (gRPC %s)", addr, grpcAddr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
