// Minimal vcsim launcher for Debian's golang-github-vmware-govmomi-dev 0.24.x,
// which ships the simulator library but not the upstream vcsim/main.go.
// The project's own small main (scripts/vsphere/setup.sh builds it in GOPATH mode, GO111MODULE=off).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/types"

	// optional endpoints present in 0.24.x
	_ "github.com/vmware/govmomi/lookup/simulator"
	_ "github.com/vmware/govmomi/pbm/simulator"
	_ "github.com/vmware/govmomi/sts/simulator"
	_ "github.com/vmware/govmomi/vapi/cluster/simulator"
	_ "github.com/vmware/govmomi/vapi/namespace/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	flag.BoolVar(&model.Autostart, "autostart", model.Autostart, "autostart model VMs")
	flag.IntVar(&model.DelayConfig.Delay, "delay", 0, "ms delay for every SOAP method")
	flag.Float64Var(&model.DelayConfig.DelayJitter, "delay-jitter", 0, "delay jitter (coefficient of variation)")
	methodDelay := flag.String("method-delay", "", "per-method delay: 'Method1:ms,Method2:ms'")
	v := &model.ServiceContent.About.ApiVersion
	flag.StringVar(v, "api-version", *v, "API version")
	isESX := flag.Bool("esx", false, "simulate standalone ESX")
	isTLS := flag.Bool("tls", true, "enable TLS (self-signed unless -tls-cert/-tls-key are given)")
	tlsCert := flag.String("tls-cert", "", "PEM certificate (chain) for TLS")
	tlsKey := flag.String("tls-key", "", "PEM private key for TLS")
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	user := flag.String("username", "", "login username (any by default)")
	pass := flag.String("password", "", "login password (any by default)")
	flag.BoolVar(&simulator.Trace, "trace", false, "trace SOAP to stderr")
	toolsRunning := flag.Bool("tools-running", false,
		"report VMware Tools as running in the model VMs (VMs created later, e.g. clones, report tools not running)")
	hostCores := flag.Int("host-cores", 16, "physical CPU cores of every host (vcsim's own model has 2)")
	hostMemMiB := flag.Int64("host-memory-mib", 65536, "memory of every host in MiB (vcsim's own model has 4 GiB)")
	flag.Parse()
	sizeHosts(int16(*hostCores), *hostMemMiB)

	if *methodDelay != "" {
		m := map[string]int{}
		for _, s := range strings.Split(*methodDelay, ",") {
			kv := strings.Split(strings.TrimSpace(s), ":")
			if len(kv) != 2 {
				log.Fatal("bad -method-delay")
			}
			n, err := strconv.Atoi(kv[1])
			if err != nil {
				log.Fatal(err)
			}
			m[kv[0]] = n
		}
		model.DelayConfig.MethodDelay = m
	}
	if *isESX {
		opts := model
		model = simulator.ESX()
		model.Machine = opts.Machine
		model.Autostart = opts.Autostart
		model.DelayConfig = opts.DelayConfig
	}
	u := &url.URL{Host: *listen}
	if *user != "" {
		u.User = url.UserPassword(*user, *pass)
	}
	model.ServiceContent.About.FullName += " (govmomi simulator)"
	model.ServiceContent.About.OsType = runtime.GOOS + "-" + runtime.GOARCH
	esx.HostSystem.Summary.Hardware.Vendor += " (govmomi simulator)"
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	if *toolsRunning {
		// vcsim 0.24 has no guest-tools model; its ShutdownGuest works regardless. Declaring
		// Tools running in the model VMs lets clients that honour guest.toolsRunningStatus
		// (as they must on real vSphere) use ShutdownGuest on them.
		for _, e := range simulator.Map.All("VirtualMachine") {
			if vm, ok := e.(*simulator.VirtualMachine); ok && vm.Guest != nil {
				vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
				vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
				vm.Guest.ToolsVersionStatus2 = string(types.VirtualMachineToolsVersionStatusGuestToolsCurrent)
			}
		}
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = u
	if *isTLS {
		model.Service.TLS = new(tls.Config)
		if *tlsCert != "" {
			// Go's built-in test certificate has a 1024-bit RSA key, which rustls/webpki
			// (rightly) refuse; the setup script supplies a P-256 certificate from its own CA.
			pair, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
			if err != nil {
				log.Fatal(err)
			}
			model.Service.TLS.Certificates = []tls.Certificate{pair}
		}
	}
	s := model.Service.NewServer()
	// Set before any client can know the server is up (setup.sh polls for readiness afterwards).
	s.Config.Handler = guestShutdownDelays.wrap(s.Config.Handler, simulator.Map.Path)
	s.Config.Handler = taskFidelity.wrap(s.Config.Handler, simulator.Map.Path)
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", s.URL, os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	model.Remove()
}

// sizeHosts gives every host of the model `cores` cores (twice as many threads) and `memMiB` of
// memory. vcsim's hosts have 2 cores and 4 GiB, while -vm 20 powers on 20 one-vCPU model VMs in
// each resource pool: 20 on the standalone host and 6 to 8 on each cluster host. At the
// provider's 4 vCPUs per core (VCPU_PER_CORE) a 2-core host holds 8, so the standalone host and
// one cluster host were full, placement with host anti-affinity found only two hosts with room,
// and a three-member VM set never converged. 16 cores and 64 GiB is a small real ESXi host.
func sizeHosts(cores int16, memMiB int64) {
	hw := esx.HostSystem.Summary.Hardware
	hw.NumCpuCores, hw.NumCpuThreads = cores, 2*cores
	hw.MemorySize = memMiB << 20
	esx.HostHardwareInfo.CpuInfo.NumCpuCores = cores
	esx.HostHardwareInfo.CpuInfo.NumCpuThreads = 2 * cores
	esx.HostHardwareInfo.MemorySize = memMiB << 20
}

// Guest shutdown delays (for benchmarks): vcsim 0.24's ShutdownGuest powers the VM off at once.
// A per-VM delay, set with
//
//	POST /virtrigaud/guest-shutdown-delay?vm=<VirtualMachine moref, e.g. vm-57>&ms=<milliseconds>
//
// (on the same listener; ms=0 removes it) makes the guest take that long: ShutdownGuest on a
// powered-on VM with a delay is answered at once (the request is delivered, as on real vSphere),
// and the original SOAP request is replayed to the simulator after the delay, which then powers
// the VM off (property-collector updates and events as usual). A ShutdownGuest while one is
// pending is answered without scheduling another. A pending shutdown belongs to the guest's
// run and personality: PowerOffVM_Task, ResetVM_Task or RebootGuest in between drop it, and so
// does setting the knob again (ms=3600000 models a guest that ignores
// ShutdownGuest). VMs without a delay behave as before.
var guestShutdownDelays = &delays{ms: map[string]int{}, pending: map[string]bool{}, gen: map[string]int{}}

type delays struct {
	mu      sync.Mutex
	ms      map[string]int
	pending map[string]bool
	gen     map[string]int
}

// endsRunRe matches the calls that end the guest's run (or its pending shutdown with it).
var endsRunRe = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?(?:PowerOffVM_Task|ResetVM_Task|RebootGuest)[\s>][\s\S]*?<(?:[A-Za-z0-9_]+:)?_this[^>]*>\s*([^<\s]+)\s*<`)

// forget drops the VM's pending delayed shutdown.
func (d *delays) forget(ref string) {
	d.mu.Lock()
	d.gen[ref]++
	delete(d.pending, ref)
	d.mu.Unlock()
}

const delayPath = "/virtrigaud/guest-shutdown-delay"

var shutdownGuestRe = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?ShutdownGuest[\s>][\s\S]*?<(?:[A-Za-z0-9_]+:)?_this[^>]*>\s*([^<\s]+)\s*<`)

const shutdownGuestResponse = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse></soapenv:Body></soapenv:Envelope>`

var rebootGuestRe = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?RebootGuest[\s>][\s\S]*?<(?:[A-Za-z0-9_]+:)?_this[^>]*>\s*([^<\s]+)\s*<`)

const rebootGuestResponse = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RebootGuestResponse xmlns="urn:vim25"></RebootGuestResponse></soapenv:Body></soapenv:Envelope>`

const invalidPowerStateFault = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The attempted operation cannot be performed in the current state (Powered off).</faultstring><detail><InvalidPowerStateFault xmlns="urn:vim25" xsi:type="InvalidPowerState"><requestedState>poweredOn</requestedState><existingState>poweredOff</existingState></InvalidPowerStateFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`

// rebootGuest answers RebootGuest, which vcsim 0.24 lacks (MethodNotFound), as vCenter does
// for a guest with VMware Tools: the guest restarts inside its run, so the VM stays
// poweredOn; a VM that is not powered on gets InvalidPowerState.
func rebootGuest(w http.ResponseWriter, ref string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	if !poweredOn(ref) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, invalidPowerStateFault)
		return
	}
	_, _ = io.WriteString(w, rebootGuestResponse)
}

func poweredOn(ref string) bool {
	obj := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref})
	vm, ok := obj.(*simulator.VirtualMachine)
	if !ok {
		return false
	}
	on := false
	simulator.Map.WithLock(vm, func() {
		on = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	})
	return on
}

func (d *delays) wrap(inner http.Handler, sdkPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == delayPath {
			d.set(w, r)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != sdkPath {
			inner.ServeHTTP(w, r)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		if m := endsRunRe.FindSubmatch(body); m != nil {
			d.forget(string(m[1]))
		}
		if m := rebootGuestRe.FindSubmatch(body); m != nil {
			rebootGuest(w, string(m[1]))
			return
		}
		m := shutdownGuestRe.FindSubmatch(body)
		if m == nil {
			inner.ServeHTTP(w, r)
			return
		}
		ref := string(m[1])
		d.mu.Lock()
		ms := d.ms[ref]
		d.mu.Unlock()
		if ms <= 0 || !poweredOn(ref) {
			inner.ServeHTTP(w, r)
			return
		}
		d.mu.Lock()
		schedule := !d.pending[ref]
		d.pending[ref] = true
		gen := d.gen[ref]
		d.mu.Unlock()
		if schedule {
			replay := r.Clone(context.Background())
			go func() {
				time.Sleep(time.Duration(ms) * time.Millisecond)
				d.mu.Lock()
				current := d.gen[ref] == gen
				if current {
					delete(d.pending, ref)
				}
				d.mu.Unlock()
				if !current || !poweredOn(ref) {
					return
				}
				replay.Body = ioutil.NopCloser(bytes.NewReader(body))
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, replay)
				if rec.Code != http.StatusOK {
					log.Printf("delayed ShutdownGuest of %s: HTTP %d: %s", ref, rec.Code, rec.Body.String())
				}
			}()
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = io.WriteString(w, shutdownGuestResponse)
	})
}

func (d *delays) set(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	ref := r.URL.Query().Get("vm")
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if ref == "" || err != nil || ms < 0 {
		http.Error(w, "want ?vm=<moref>&ms=<milliseconds >= 0>", http.StatusBadRequest)
		return
	}
	if _, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine); !ok {
		http.Error(w, "no such VirtualMachine "+ref, http.StatusNotFound)
		return
	}
	d.mu.Lock()
	if ms == 0 {
		delete(d.ms, ref)
	} else {
		d.ms[ref] = ms
	}
	d.mu.Unlock()
	d.forget(ref)
	fmt.Fprintf(w, "{\"vm\":%q,\"ms\":%d}\n", ref, ms)
}

// Task fidelity: what vcsim 0.24 gets wrong about two tasks, corrected after the simulator ran
// them (the reply is held until then), plus a fault to inject into clones.
//
//   - CreateSnapshot_Task: vcsim records the VM's power state as the snapshot's state whatever
//     `memory` said, and `quiesced` as asked. vCenter records poweredOff for a snapshot without
//     memory (reverting to it leaves the VM off; upstream vcsim fixed this in govmomi PR 3853),
//     and ignores `quiesce` when the VM is not powered on or VMware Tools are not running (the
//     API reference of CreateSnapshot_Task), so the tree says quiesced=false then.
//
//   - CloneVM_Task, when armed for the source with
//
//     POST /virtrigaud/fail-next-clone?vm=<source VM moref>[&armed=0]
//
//     (one clone, then disarmed; armed=0 disarms): the simulator makes the clone, which is
//     registered in the inventory, then the task fails with NoDiskSpace, as a clone whose disk
//     copy ran out of room half-way does; the registered VM is left behind for the client to
//     clean up.
//
//   - The customization a clone was made with, which vCenter keeps pending until the clone's
//     first power-on (vcsim applies only the hostname and addresses then, and keeps no
//     gateway), is answered as JSON by
//
//     GET /virtrigaud/customization?vm=<clone VM moref>
//
//     ({"hostname": ..., "networks": [{"ip": ..., "gateway": ..., "dns": [...]}], "user_data":
//     the clone's guestinfo.userdata as it is now in its extraConfig, decoded}; 404 when the
//     VM was not cloned with one).
var taskFidelity = &fidelity{failClone: map[string]bool{}, customized: map[string]cloneCustomization{}}

type fidelity struct {
	mu         sync.Mutex
	failClone  map[string]bool
	customized map[string]cloneCustomization
}

type cloneNetwork struct {
	IP      string   `json:"ip"`
	Gateway []string `json:"gateway"`
	DNS     []string `json:"dns"`
}

type cloneCustomization struct {
	Hostname string         `json:"hostname"`
	Networks []cloneNetwork `json:"networks"`
	UserData string         `json:"user_data,omitempty"`
}

const failClonePath = "/virtrigaud/fail-next-clone"
const customizationPath = "/virtrigaud/customization"

var taskReturnRe = regexp.MustCompile(`<returnval type="Task">\s*([^<\s]+)\s*</returnval>`)

func (f *fidelity) wrap(inner http.Handler, sdkPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == failClonePath {
			f.arm(w, r)
			return
		}
		if r.URL.Path == customizationPath {
			f.answerCustomization(w, r)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != sdkPath {
			inner.ServeHTTP(w, r)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		var after func(*simulator.Task)
		switch {
		case bytes.Contains(body, []byte("CreateSnapshot_Task")):
			after = snapshotFixer(body)
		case bytes.Contains(body, []byte("CloneVM_Task")):
			after = f.cloneFailer(body)
		}
		if after == nil {
			inner.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		if m := taskReturnRe.FindSubmatch(rec.Body.Bytes()); m != nil {
			ref := types.ManagedObjectReference{Type: "Task", Value: string(m[1])}
			if t, ok := simulator.Map.Get(ref).(*simulator.Task); ok {
				after(t)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// decode reads a SOAP request body as its vim25 method.
func decode(body []byte) interface{} {
	m, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		return nil
	}
	return m.Body
}

// snapshotFixer returns what corrects the new snapshot's state and quiesced flag, from the
// VM as it is before the snapshot is taken.
func snapshotFixer(body []byte) func(*simulator.Task) {
	req, ok := decode(body).(*types.CreateSnapshot_Task)
	if !ok {
		return nil
	}
	vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	var power types.VirtualMachinePowerState
	tools := false
	simulator.Map.WithLock(vm, func() {
		power = vm.Runtime.PowerState
		tools = vm.Guest != nil &&
			vm.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	})
	state := types.VirtualMachinePowerStatePoweredOff
	if req.Memory {
		state = power
	}
	quiesced := req.Quiesce && tools && power == types.VirtualMachinePowerStatePoweredOn
	return func(t *simulator.Task) {
		snap, ok := t.Info.Result.(types.ManagedObjectReference)
		if t.Info.State != types.TaskInfoStateSuccess || !ok {
			return
		}
		simulator.Map.WithLock(vm, func() {
			if vm.Snapshot == nil {
				return
			}
			node := findSnapshot(vm.Snapshot.RootSnapshotList, snap)
			if node == nil {
				return
			}
			node.State, node.Quiesced = state, quiesced
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "snapshot.rootSnapshotList", Val: vm.Snapshot.RootSnapshotList},
			})
		})
	}
}

func findSnapshot(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) *types.VirtualMachineSnapshotTree {
	for i := range tree {
		if tree[i].Snapshot == ref {
			return &tree[i]
		}
		if hit := findSnapshot(tree[i].ChildSnapshotList, ref); hit != nil {
			return hit
		}
	}
	return nil
}

// cloneFailer returns what records a successful clone's customization and fails an armed
// clone after the simulator registered the new VM (arming is used up here).
func (f *fidelity) cloneFailer(body []byte) func(*simulator.Task) {
	req, ok := decode(body).(*types.CloneVM_Task)
	if !ok {
		return nil
	}
	f.mu.Lock()
	armed := f.failClone[req.This.Value]
	delete(f.failClone, req.This.Value)
	f.mu.Unlock()
	record := customizationOf(req.Spec.Customization)
	return func(t *simulator.Task) {
		if t.Info.State != types.TaskInfoStateSuccess {
			return
		}
		clone, _ := t.Info.Result.(types.ManagedObjectReference)
		if record != nil {
			f.mu.Lock()
			f.customized[clone.Value] = *record
			f.mu.Unlock()
		}
		if !armed {
			return
		}
		log.Printf("fail-next-clone: %s cloned to %s (%s, left registered); failing the task", req.This.Value, clone.Value, req.Name)
		fault := &types.NoDiskSpace{
			FileFault: types.FileFault{File: "[LocalDS_0] " + req.Name + "/" + req.Name + ".vmdk"},
			Datastore: "LocalDS_0",
		}
		simulator.Map.Update(t, []types.PropertyChange{
			{Name: "info.state", Val: types.TaskInfoStateError},
			{Name: "info.result", Val: nil},
			{Name: "info.error", Val: types.LocalizedMethodFault{
				Fault:            fault,
				LocalizedMessage: "There is not enough space on the file system for the selected operation (injected by fail-next-clone).",
			}},
		})
	}
}

func (f *fidelity) arm(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	ref := r.URL.Query().Get("vm")
	armed := r.URL.Query().Get("armed") != "0"
	if ref == "" {
		http.Error(w, "want ?vm=<moref>[&armed=0]", http.StatusBadRequest)
		return
	}
	if _, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine); !ok {
		http.Error(w, "no such VirtualMachine "+ref, http.StatusNotFound)
		return
	}
	f.mu.Lock()
	if armed {
		f.failClone[ref] = true
	} else {
		delete(f.failClone, ref)
	}
	f.mu.Unlock()
	fmt.Fprintf(w, "{\"vm\":%q,\"armed\":%t}\n", ref, armed)
}

// customizationOf is what a clone's CustomizationSpec asks for (nil without one).
func customizationOf(spec *types.CustomizationSpec) *cloneCustomization {
	if spec == nil {
		return nil
	}
	c := cloneCustomization{}
	if prep, ok := spec.Identity.(*types.CustomizationLinuxPrep); ok {
		if fixed, ok := prep.HostName.(*types.CustomizationFixedName); ok {
			c.Hostname = fixed.Name
		}
	}
	for _, m := range spec.NicSettingMap {
		n := cloneNetwork{Gateway: m.Adapter.Gateway, DNS: m.Adapter.DnsServerList}
		if fixed, ok := m.Adapter.Ip.(*types.CustomizationFixedIp); ok {
			n.IP = fixed.IpAddress
		}
		c.Networks = append(c.Networks, n)
	}
	return &c
}

func (f *fidelity) answerCustomization(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("vm")
	f.mu.Lock()
	c, ok := f.customized[ref]
	f.mu.Unlock()
	if !ok {
		http.Error(w, "no customization recorded for "+ref, http.StatusNotFound)
		return
	}
	if vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine); ok {
		simulator.Map.WithLock(vm, func() {
			for _, o := range vm.Config.ExtraConfig {
				opt := o.GetOptionValue()
				if v, ok := opt.Value.(string); ok && opt.Key == "guestinfo.userdata" {
					if raw, err := base64.StdEncoding.DecodeString(v); err == nil {
						c.UserData = string(raw)
					}
				}
			}
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c)
}
