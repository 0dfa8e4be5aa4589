package k6model

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/grafana/sobek"
)

// httpModule models k6/http's get and request, and the built-in HTTP
// metrics: http_reqs, http_req_failed (a response outside 200-399, or no
// response) and http_req_duration (ms).
func (vu *VU) httpModule() *sobek.Object {
	m := vu.rt.NewObject()
	client := &http.Client{Transport: &http.Transport{DialContext: vu.model.dial}}
	request := func(method, url string, body sobek.Value, params map[string]any) *sobek.Object {
		if vu.inInit {
			vu.throw("making HTTP requests in the init context is not supported")
		}
		timeout := 60 * time.Second
		if t, ok := params["timeout"]; ok {
			timeout = msOrDuration(vu, t)
		}
		var rd io.Reader
		if body != nil && !sobek.IsUndefined(body) && !sobek.IsNull(body) {
			rd = strings.NewReader(body.String())
		}
		req, err := http.NewRequestWithContext(vu.ctx, method, url, rd)
		if err != nil {
			vu.throw("%v", err)
		}
		if h, ok := params["headers"].(map[string]any); ok {
			for k, v := range h {
				req.Header.Set(k, toString(v))
			}
		}
		client.Timeout = timeout
		start := time.Now()
		resp, err := client.Do(req)
		res := vu.rt.NewObject()
		status := 0
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
			res.Set("body", string(b))
			res.Set("error", "")
		} else {
			res.Set("body", nil)
			res.Set("error", err.Error())
		}
		took := time.Since(start)
		tags := map[string]string{"method": method, "status": itoa(status)}
		if name, ok := params["tags"].(map[string]any); ok {
			for k, v := range name {
				tags[k] = toString(v)
			}
		}
		vu.model.Metrics.addCount("http_reqs", 1, tags)
		vu.model.Metrics.addRate("http_req_failed", status < 200 || status > 399, tags)
		vu.model.Metrics.addTrend("http_req_duration", float64(took)/float64(time.Millisecond), tags)
		res.Set("status", status)
		res.Set("url", url)
		timings := vu.rt.NewObject()
		timings.Set("duration", float64(took)/float64(time.Millisecond))
		res.Set("timings", timings)
		return res
	}
	m.Set("get", func(url string, params map[string]any) *sobek.Object {
		return request("GET", url, nil, params)
	})
	m.Set("request", func(method, url string, body sobek.Value, params map[string]any) *sobek.Object {
		return request(strings.ToUpper(method), url, body, params)
	})
	return m
}
