// Command catalog is the demo's dependency: it serves ingredients over
// HTTP on :8080.
//
//	GET /ingredients/{id}  one ingredient as JSON
//	GET /health            200 "ok"
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
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
	log.Printf("catalog listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
