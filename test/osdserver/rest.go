package osdserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/libopenstorage/openstorage/api"
)

// This file is api/server/volume.go (type volAPI) of openstorage master:
// the REST v1 routes and handlers, which forward to the SDK (sdk.go).

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay, status := s.delay, s.status
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		UserAgent: r.Header.Get("User-Agent"), Auth: r.Header.Get("Authorization") != "",
	})
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if status != 0 {
		http.Error(w, fmt.Sprintf("injected failure: HTTP %d", status), status)
		return
	}
	s.route(w, r)
}

// route is volAPI.Routes on a gorilla mux (api/server/server.go): the
// volume routes under /v1 (volume.APIVersion), the versions route without
// it (versionRoute). An unknown path gets the router's NotFoundHandler,
// http.NotFound ("404 page not found"); a known path with another method
// gets gorilla's method-not-allowed answer, 405 with an empty body.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	vols := "/v1/" + api.OsdVolumePath
	snaps := "/v1/" + api.OsdSnapshotPath
	type h = func(http.ResponseWriter, *http.Request, string)
	var byMethod map[string]h
	var id string
	switch {
	case p == "/"+api.OsdVolumePath+"/versions":
		byMethod = map[string]h{"GET": s.versions}
	case p == vols:
		byMethod = map[string]h{"POST": s.create, "GET": s.enumerate}
	case p == snaps:
		byMethod = map[string]h{"POST": s.snap, "GET": s.snapEnumerate}
	case strings.HasPrefix(p, vols+"/") && len(p) > len(vols)+1 && !strings.Contains(p[len(vols)+1:], "/"):
		id = p[len(vols)+1:]
		byMethod = map[string]h{"PUT": s.volumeSet, "GET": s.inspect, "DELETE": s.delete}
	default:
		http.NotFound(w, r)
		return
	}
	fn, ok := byMethod[r.Method]
	if !ok {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	fn(w, r, id)
}

// sendError is restBase.sendError (api/server/server.go): http.Error, so
// text/plain with a trailing newline.
func sendError(w http.ResponseWriter, msg string, code int) { http.Error(w, msg, code) }

// encode is json.NewEncoder(w).Encode, as every handler answers: no
// Content-Type is set, so net/http sniffs one.
func encode(w http.ResponseWriter, v any) { _ = json.NewEncoder(w).Encode(v) }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// readBody reads the whole body (so that net/http watches the connection
// and cancels r.Context() when the client goes away) and decodes it as
// json.NewDecoder(r.Body).Decode does.
func readBody(r *http.Request, v any) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	return body, json.NewDecoder(bytes.NewReader(body)).Decode(v)
}

// rawSpec is the request's "spec" object, key by key: the second decode
// that picks up the spec keys v1.0.0's types drop.
func rawSpec(body []byte) map[string]json.RawMessage {
	var raw struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	_ = json.NewDecoder(bytes.NewReader(body)).Decode(&raw)
	return raw.Spec
}

// versions is volAPI.versions: never authenticated.
func (s *Server) versions(w http.ResponseWriter, _ *http.Request, _ string) {
	encode(w, []string{"v1"})
}

// create is volAPI.create → sdk VolumeServer.Create. Always 200 with a
// VolumeCreateResponse: {"id":...,"volume_response":{}} or
// {"volume_response":{"error":"rpc error: ..."}}.
func (s *Server) create(w http.ResponseWriter, r *http.Request, _ string) {
	var req api.VolumeCreateRequest
	body, err := readBody(r, &req)
	if err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := s.callerOf(r)
	spec := req.GetSpec()
	if spec == nil {
		// The handler dereferences spec.VolumeLabels unchecked: the panic
		// drops the connection.
		panic(http.ErrAbortHandler)
	}
	// The REST handler copies the locator labels into the spec.
	if spec.VolumeLabels == nil {
		spec.VolumeLabels = map[string]string{}
	}
	for k, v := range req.GetLocator().GetVolumeLabels() {
		spec.VolumeLabels[k] = v
	}
	// SdkVolumeCreateRequest{Name, Labels, Spec}: no Source, so
	// source.parent is ignored and a plain volume is made.
	id, err := s.sdkCreate(c, req.GetLocator().GetName(), req.GetLocator().GetVolumeLabels(), spec, pickExtra(rawSpec(body)))
	resp := &api.VolumeCreateResponse{VolumeResponse: &api.VolumeResponse{Error: errString(err)}}
	if err == nil {
		resp.Id = id
	}
	encode(w, resp)
}

// snap is volAPI.snap: readonly → sdk SnapshotCreate with the locator's
// name and labels; otherwise sdk Clone with the name and the locator's
// labels as AdditionalLabels (since openstorage commit 78a53252,
// PWX-38585; before it they were dropped). Always 200 with a
// SnapCreateResponse.
func (s *Server) snap(w http.ResponseWriter, r *http.Request, _ string) {
	var req api.SnapCreateRequest
	if _, err := readBody(r, &req); err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := s.callerOf(r)
	if req.Locator == nil {
		// snapReq.Locator.Name is dereferenced unchecked: the panic drops
		// the connection.
		panic(http.ErrAbortHandler)
	}
	var id string
	var err error
	if req.Readonly {
		id, err = s.sdkSnapshotCreate(r.Context(), c, req.Id, req.Locator.Name, req.Locator.VolumeLabels)
	} else {
		id, err = s.sdkClone(r.Context(), c, req.Id, req.Locator.Name, req.Locator.VolumeLabels)
	}
	resp := &api.SnapCreateResponse{VolumeCreateResponse: &api.VolumeCreateResponse{}}
	if err != nil {
		resp.VolumeCreateResponse.VolumeResponse = &api.VolumeResponse{Error: err.Error()}
	} else {
		resp.VolumeCreateResponse.Id = id
	}
	encode(w, resp)
}

// inspect is volAPI.inspect → sdk Inspect (deep): 200 [volume]; NotFound
// → 200 []; any other error → 404 text; id "versions" → 200 [] whatever
// the error (for clients that ask /v1/osd-volumes/versions).
func (s *Server) inspect(w http.ResponseWriter, r *http.Request, id string) {
	v, err := s.sdkInspect(s.callerOf(r), id)
	out := []json.RawMessage{}
	if err != nil {
		if id != "versions" && !isNotFound(err) {
			sendError(w, err.Error(), http.StatusNotFound)
			return
		}
	} else {
		out = append(out, v)
	}
	encode(w, out)
}

// enumerate is volAPI.enumerate. With VolumeID (repeatable): one deep
// inspect each, NotFound skipped, any other error 400 "Failed to inspect
// volumeID: ..."; otherwise sdk InspectWithFilters(Name, Label), errors
// 500 text.
func (s *Server) enumerate(w http.ResponseWriter, r *http.Request, _ string) {
	c := s.callerOf(r)
	q := r.URL.Query()
	var name string
	var labels, configLabels map[string]string
	if v := q[api.OptName]; v != nil {
		name = v[0]
	}
	// A bad Label or ConfigLabel gets a 400 but the handler does not
	// return: the answer goes on after the error text.
	if v := q[api.OptLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &labels); err != nil {
			sendError(w, "Failed to parse parse VolumeLabels: "+err.Error(), http.StatusBadRequest)
		}
	}
	if v := q[api.OptConfigLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &configLabels); err != nil {
			sendError(w, "Failed to parse parse configLabels: "+err.Error(), http.StatusBadRequest)
		}
		// Config labels are added to the locator's. (The real handler
		// writes into a nil map, and panics, when Label is absent; this
		// server does not crash on it.)
		if labels == nil {
			labels = map[string]string{}
		}
		for k, v := range configLabels {
			labels[k] = v
		}
	}
	if ids := q[api.OptVolumeID]; ids != nil {
		vols := []json.RawMessage{}
		for _, id := range ids {
			v, err := s.sdkInspect(c, id)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				sendError(w, "Failed to inspect volumeID: "+err.Error(), http.StatusBadRequest)
				return
			}
			vols = append(vols, v)
		}
		encode(w, vols)
		return
	}
	vols, err := s.sdkEnumerate(c, name, labels)
	if err != nil {
		sendError(w, err.Error(), http.StatusInternalServerError)
		return
	}
	encode(w, vols)
}

// snapEnumerate is volAPI.snapEnumerate: Label and the first VolumeID go
// to sdk SnapshotEnumerateWithFilters (error: 400 "Failed to enumerate
// snaps: ..."), then each snapshot is inspected (NotFound skipped, other
// errors 400 text).
func (s *Server) snapEnumerate(w http.ResponseWriter, r *http.Request, _ string) {
	c := s.callerOf(r)
	q := r.URL.Query()
	var labels map[string]string
	if v := q[api.OptLabel]; v != nil {
		if err := json.Unmarshal([]byte(v[0]), &labels); err != nil {
			sendError(w, "Failed to parse parse VolumeLabels: "+err.Error(), http.StatusBadRequest)
		}
	}
	var volID string
	if v := q[api.OptVolumeID]; len(v) > 0 {
		volID = v[0]
	}
	ids, err := s.sdkSnapEnumerate(c, volID, labels)
	if err != nil {
		sendError(w, "Failed to enumerate snaps: "+err.Error(), http.StatusBadRequest)
		return
	}
	snaps := []json.RawMessage{}
	for _, id := range ids {
		v, err := s.sdkInspect(c, id)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			sendError(w, err.Error(), http.StatusBadRequest)
			return
		}
		snaps = append(snaps, v)
	}
	encode(w, snaps)
}

// delete is volAPI.delete → sdk Delete: always 200 with a VolumeResponse,
// {} or {"error":"rpc error: ..."}; an unknown ID is a success.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, id string) {
	resp := &api.VolumeResponse{}
	if err := s.sdkDelete(r.Context(), s.callerOf(r), id); err != nil {
		resp.Error = err.Error()
	}
	encode(w, resp)
}

// volumeSetResponse is api.VolumeSetResponse with the volume as the real
// server encodes it.
type volumeSetResponse struct {
	Volume         json.RawMessage     `json:"volume,omitempty"`
	VolumeResponse *api.VolumeResponse `json:"volume_response,omitempty"`
}

// volumeSet is volAPI.volumeSet:
//  1. with a locator or a spec: a shallow sdk Inspect (an error other
//     than NotFound, or any error without an action: 400 text; NotFound
//     with an action skips the update), then sdk Update (error: 400 text);
//  2. attach or detach, then (if that worked) mount or unmount, through
//     the SDK mount/attach server; a mount without a path is "Invalid
//     mount path";
//  3. a deep inspect: 200 {"volume":{...}}, the action's error in
//     volume_response.error; if the inspect fails, "volume":{} (and, for
//     an attach, the inspect error unless the action failed).
func (s *Server) volumeSet(w http.ResponseWriter, r *http.Request, id string) {
	var req api.VolumeSetRequest
	body, err := readBody(r, &req)
	if err != nil {
		sendError(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := s.callerOf(r)
	ctx := r.Context()
	if req.Locator != nil || req.Spec != nil {
		if err := s.checkAccess(c, id); err != nil {
			if !isNotFound(err) || req.Action == nil {
				sendError(w, err.Error(), http.StatusBadRequest)
				return
			}
			// "Ignoring unmount/detach action on deleted volume."
		} else {
			var labels map[string]string
			if req.Locator != nil && len(req.Locator.VolumeLabels) > 0 {
				labels = req.Locator.VolumeLabels // Locator.Name is not passed on.
			}
			var sent map[string]json.RawMessage
			if req.Spec != nil {
				sent = pickExtra(rawSpec(body))
			}
			if err := s.sdkUpdate(c, id, labels, req.Spec, sent); err != nil {
				sendError(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
	}
	err = nil
	a := req.Action
	if a != nil {
		switch a.Attach {
		case api.VolumeActionParam_VOLUME_ACTION_PARAM_ON:
			err = s.sdkAttach(ctx, c, id, req.Options)
		case api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF:
			// options.OptionsUnmountBeforeDetach; the action's own
			// unmount_before_detach is not read.
			err = s.sdkDetach(ctx, c, id, req.Options["UNMOUNT_BEFORE_DETACH"] == "true")
		}
		if err == nil {
			switch a.Mount {
			case api.VolumeActionParam_VOLUME_ACTION_PARAM_ON:
				if a.MountPath == "" {
					err = fmt.Errorf("Invalid mount path")
				} else {
					err = s.sdkMount(ctx, c, id, a.MountPath)
				}
			case api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF:
				err = s.sdkUnmount(ctx, c, id, a.MountPath)
			}
		}
	}
	var resp volumeSetResponse
	v, err2 := s.sdkInspect(c, id)
	if err2 != nil {
		resp.Volume = json.RawMessage("{}")
		if a != nil && a.Attach == api.VolumeActionParam_VOLUME_ACTION_PARAM_ON {
			resp.VolumeResponse = &api.VolumeResponse{Error: err2.Error()}
		}
	} else {
		resp.Volume = v
	}
	if err != nil {
		resp.VolumeResponse = &api.VolumeResponse{Error: err.Error()}
	}
	encode(w, resp)
}
