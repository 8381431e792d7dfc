// Command sendense-lab serves a vCenter simulator (govmomi's vcsim) extended for Sendense:
// a seed site (DatabanxDC/pgtest1, fstest1 with real file systems), real VMDK descriptor and flat files behind every disk,
// QueryChangedDiskAreas with change ids, and authenticated /sendense/ endpoints to write
// into a disk, reset its change tracking and inject a quiesce fault.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8989", "address to serve HTTPS on")
	user := flag.String("user", "administrator@vsphere.local", "login user")
	passwordFile := flag.String("password-file", "", "file holding the login password")
	home := flag.String("home", "", "lab run folder: the datastores live here")
	vms := flag.Int("vms", 4, "simulator VMs to generate besides the seed site")
	hosts := flag.Int("hosts", 3, "hosts per cluster")
	clusters := flag.Int("clusters", 1, "clusters per datacenter")
	certFile := flag.String("cert", "", "TLS certificate (PEM); made with -key when missing")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	diskMiB := flag.Int("disk-mib", 24, "size of pgtest1's first disk in MiB (the second is 5/3 of it)")
	secondDiskMiB := flag.Int("second-disk-mib", 0, "size of pgtest1's second disk in MiB (0: 5/3 of the first)")
	fsImageDir := flag.String("fs-images", "", "folder with gpt.raw and fat.raw: fstest1's disks (none: no fstest1)")
	flag.Parse()

	if *passwordFile == "" || *home == "" || *certFile == "" || *keyFile == "" {
		log.Fatal("-password-file, -home, -cert and -key are required")
	}
	raw, err := ioutil.ReadFile(*passwordFile)
	if err != nil {
		log.Fatal(err)
	}
	password := strings.TrimRight(string(raw), "\r\n")

	// Model datastores are temporary folders: keep them under the lab folder.
	dsRoot := filepath.Join(*home, "datastores")
	if err := os.MkdirAll(dsRoot, 0o700); err != nil {
		log.Fatal(err)
	}
	os.Setenv("TMPDIR", dsRoot)

	model := simulator.VPX()
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	pools := model.Host + model.Cluster
	model.Machine = (*vms + pools - 1) / pools
	if err := model.Create(); err != nil {
		log.Fatalf("creating the model: %v", err)
	}
	defer model.Remove()

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		log.Fatal(err)
	}
	site := &seedSite{client: client, dsRoot: dsRoot, diskMiB: int64(*diskMiB),
		secondDiskMiB: int64(*secondDiskMiB), fsImageDir: *fsImageDir}
	if err := site.build(ctx); err != nil {
		log.Fatalf("building the seed site: %v", err)
	}
	lab := newLab()
	if err := lab.prepareDisks(site.fsImages); err != nil {
		log.Fatalf("writing disks: %v", err)
	}

	cert, err := loadOrMakeCertificate(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	model.Service.TLS = cert
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	server := model.Service.NewServer()
	server.Config.Handler = lab.handler(server.Config.Handler, *user, password)
	fmt.Printf("listening on %s\n", server.URL.Host)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	server.Close()
}
