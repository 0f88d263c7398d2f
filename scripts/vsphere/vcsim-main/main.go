// Minimal vcsim launcher for Debian's golang-github-vmware-govmomi-dev 0.24.x,
// which ships the simulator library but not the upstream vcsim/main.go.
// The project's own small main (scripts/vsphere/setup.sh builds it in GOPATH mode, GO111MODULE=off).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

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
	flag.Parse()

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
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", s.URL, os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	model.Remove()
}
