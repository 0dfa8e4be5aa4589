// Command recommendations is the demo's front service. For each request
// it calls catalog CALLS times in sequence, each call with a 1s timeout,
// and answers 500 if any call fails. RETRIES=n retries a failed call up to
// n times with exponential backoff (1s, 2s, 4s, ...).
//
//	GET /recommendations  a JSON list of ingredients
//	GET /health           200 "ok"
//
// Environment: CATALOG_URL (e.g. http://198.18.10.2:8080), CALLS (default
// 4), RETRIES (default 0), LISTEN (default :8080).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func main() {
	catalog := os.Getenv("CATALOG_URL")
	calls := envInt("CALLS", 4)
	retries := envInt("RETRIES", 0)
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	client := &http.Client{Timeout: time.Second}
	get := func(id int) (string, error) {
		var lastErr error
		for attempt := 0; attempt <= retries; attempt++ {
			if attempt > 0 {
				time.Sleep(time.Duration(1<<(attempt-1)) * time.Second) // 1s, 2s, 4s, ...
			}
			resp, err := client.Get(fmt.Sprintf("%s/ingredients/%d", catalog, id))
			if err != nil {
				lastErr = err
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				lastErr = fmt.Errorf("catalog answered %d: %v", resp.StatusCode, err)
				continue
			}
			var ing struct{ Name string }
			if err := json.Unmarshal(body, &ing); err != nil {
				lastErr = err
				continue
			}
			return ing.Name, nil
		}
		return "", lastErr
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /recommendations", func(w http.ResponseWriter, r *http.Request) {
		var out []string
		for i := range calls {
			name, err := get(i)
			if err != nil {
				http.Error(w, "catalog: "+err.Error(), http.StatusInternalServerError)
				return
			}
			out = append(out, name)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"recommendations": out})
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	log.Printf("recommendations listening on %s (catalog %s, %d calls, %d retries)", addr, catalog, calls, retries)
	log.Fatal(http.ListenAndServe(addr, mux))
}
