package main

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"io/ioutil"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// change is one recorded write: the sequence number it produced and the byte range.
type change struct {
	seq, offset, length int64
}

// diskState is the lab's change tracking for one disk: the current change id is
// "<uuid>/<seq>", and QueryChangedDiskAreas since "<uuid>/<n>" returns the ranges of the
// changes with sequence numbers above n.
type diskState struct {
	uuid     string
	seq      int64
	changes  []change
	flat     string
	capacity int64
}

func (d *diskState) reset() {
	d.uuid = uuid.New().String()
	d.seq = 0
	d.changes = nil
}

func (d *diskState) changeID() string { return fmt.Sprintf("%s/%d", d.uuid, d.seq) }

// vmState: `enabled` mirrors config.changeTrackingEnabled; `active` becomes true at the
// next snapshot after enabling (the stun/unstun cycle that makes CBT take effect on ESX).
type vmState struct {
	enabled, active, quiesceFault bool
}

// Lab holds what the simulator lacks. Lock order: a VM's registry lock, then mu.
type Lab struct {
	mu    sync.Mutex
	disks map[string]*diskState
	vms   map[string]*vmState
	// refuseCreate, when set, is the reason every CreateVM_Task fails with.
	refuseCreate string
	// snapFiles: each snapshot's .vmsn file (see snapfiles.go).
	snapFiles map[string]string
}

func newLab() *Lab {
	lab := &Lab{disks: map[string]*diskState{}, vms: map[string]*vmState{}, snapFiles: map[string]string{}}
	simulator.Map.Put(&cbtService{lab: lab})
	return lab
}

func diskID(vm types.ManagedObjectReference, key int32) string {
	return fmt.Sprintf("%s/%d", vm.Value, key)
}

func trackingEnabled(vm *simulator.VirtualMachine) bool {
	return vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
}

// datastoreFile resolves "[ds] dir/file.vmdk" to a local path via the datastore's URL.
func datastoreFile(vm *simulator.VirtualMachine, name string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(name) {
		return "", fmt.Errorf("bad datastore path %q", name)
	}
	ds, ok := simulator.Map.FindByName(p.Datastore, vm.Datastore).(*simulator.Datastore)
	if !ok {
		return "", fmt.Errorf("datastore %q of %s not found", p.Datastore, vm.Name)
	}
	return path.Join(ds.Info.GetDatastoreInfo().Url, p.Path), nil
}

var seedVMs = map[string]bool{"pgtest1": true, "web 01": true}

// prepareDisks writes a descriptor and flat file behind every disk of every VM (fstest1's
// from its images) and starts change tracking for the VMs created with it enabled.
func (l *Lab) prepareDisks(images fsImages) error {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		renumberDisks(vm)
		full := seedVMs[vm.Name]
		err := l.adopt(vm, func(file string, capacity, seed int64) error {
			if image, ok := images[path.Base(file)]; ok && vm.Name == fsVMName {
				return writeImageDisk(file, image, capacity, seed)
			}
			return writeDisk(file, capacity, full, seed)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// adopt writes the files behind the VM's disks with write and follows the VM's change
// tracking from now on. Before serving, or with the VM's lock and mu held.
func (l *Lab) adopt(vm *simulator.VirtualMachine, write func(file string, capacity, seed int64) error) error {
	st := &vmState{enabled: trackingEnabled(vm)}
	st.active = st.enabled
	l.vms[vm.Self.Value] = st
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		file, err := datastoreFile(vm, backing.FileName)
		if err != nil {
			return err
		}
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
			disk.CapacityInBytes = capacity
		}
		seed := seedOf(vm.Name, strconv.Itoa(int(disk.Key)))
		if err := write(file, capacity, seed); err != nil {
			return err
		}
		d := &diskState{flat: flatName(file), capacity: capacity}
		d.reset()
		l.disks[diskID(vm.Self, disk.Key)] = d
	}
	l.syncChangeIDs(vm)
	return nil
}

// renumberDisks gives disks the device keys ESX gives them (2000, 2001, ...): the simulator's
// own VMs get random ones.
func renumberDisks(vm *simulator.VirtualMachine) {
	next := int32(2000)
	renamed := map[int32]int32{}
	for _, dev := range vm.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok {
			if disk.Key < 2000 || disk.Key > 2999 {
				renamed[disk.Key] = next
				disk.Key = next
			}
			next = disk.Key + 1
		}
	}
	if vm.LayoutEx != nil {
		for i := range vm.LayoutEx.Disk {
			if key, ok := renamed[vm.LayoutEx.Disk[i].Key]; ok {
				vm.LayoutEx.Disk[i].Key = key
			}
		}
	}
}

// syncChangeIDs publishes the disks' change ids on their backings (empty while CBT is not
// active). The device list is copied, never edited in place: a snapshot's config shares
// the VM's device objects, and must keep the change ids it was taken with.
func (l *Lab) syncChangeIDs(vm *simulator.VirtualMachine) {
	st := l.vms[vm.Self.Value]
	devices := make([]types.BaseVirtualDevice, len(vm.Config.Hardware.Device))
	for i, dev := range vm.Config.Hardware.Device {
		devices[i] = dev
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		d := l.disks[diskID(vm.Self, disk.Key)]
		copyDisk, copyBacking := *disk, *backing
		copyBacking.ChangeId = ""
		if st != nil && st.active && d != nil {
			copyBacking.ChangeId = d.changeID()
		}
		copyDisk.Backing = &copyBacking
		devices[i] = &copyDisk
	}
	vm.Config.Hardware.Device = devices
}

func (l *Lab) findVM(name string) (*simulator.VirtualMachine, error) {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		if vm.Name == name || vm.Self.Value == name {
			return vm, nil
		}
	}
	return nil, fmt.Errorf("no VM named %q", name)
}

// afterReconfigure follows config.changeTrackingEnabled: enabling starts a new change
// tracking epoch (new uuids), effective at the next snapshot; disabling clears the ids.
func (l *Lab) afterReconfigure(ref string) {
	vm, err := l.findVM(ref)
	if err != nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		st := l.vms[vm.Self.Value]
		enabled := trackingEnabled(vm)
		if st == nil || enabled == st.enabled {
			return
		}
		st.enabled, st.active = enabled, false
		if enabled {
			for id, d := range l.disks {
				if strings.HasPrefix(id, vm.Self.Value+"/") {
					d.reset()
				}
			}
		}
		l.syncChangeIDs(vm)
	})
}

// afterSnapshot makes change tracking take effect once a snapshot has stunned the VM.
func (l *Lab) afterSnapshot(ref string) {
	vm, err := l.findVM(ref)
	if err != nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		st := l.vms[vm.Self.Value]
		if st != nil && st.enabled && !st.active {
			st.active = true
			l.syncChangeIDs(vm)
		}
	})
}

// syncRootSnapshot keeps the VM's rootSnapshot property (which vcsim leaves empty) in
// step with its snapshot tree, as vCenter does.
func (l *Lab) syncRootSnapshot(ref string) {
	vm, err := l.findVM(ref)
	if err != nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		var roots []types.ManagedObjectReference
		if vm.Snapshot != nil {
			for _, tree := range vm.Snapshot.RootSnapshotList {
				roots = append(roots, tree.Snapshot)
			}
		}
		vm.RootSnapshot = roots
	})
}

var (
	soapMethodRE = regexp.MustCompile(`<(?:[\w-]+:)?Body[^>]*>\s*<(?:[\w-]+:)?(\w+)`)
	soapThisRE   = regexp.MustCompile(`<_this[^>]*>([^<]*)</_this>`)
	quiesceRE    = regexp.MustCompile(`<quiesce[^>]*>\s*(true|1)\s*</quiesce>`)
	labThis      = []byte(`<_this type="SendenseLab">sendense-lab</_this>`)
)

// handler wraps the simulator's HTTP handler: /sendense/ is the lab's own API (HTTP basic
// auth with the lab login); SOAP calls the simulator cannot answer are redirected to the
// lab's service object, and the ones that change CBT state are followed up.
func (l *Lab) handler(next http.Handler, user, password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/sendense/") {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
				http.Error(w, "login refused", http.StatusUnauthorized)
				return
			}
			l.serveAPI(w, r)
			return
		}
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/sdk") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var method, this string
		if m := soapMethodRE.FindSubmatch(body); m != nil {
			method = string(m[1])
		}
		if m := soapThisRE.FindSubmatch(body); m != nil {
			this = string(m[1])
		}
		switch method {
		case "QueryChangedDiskAreas":
			body = soapThisRE.ReplaceAll(body, labThis)
		case "CreateVM_Task":
			if l.createRefusal() != "" {
				body = soapThisRE.ReplaceAll(body, labThis)
			}
		case "CreateSnapshot_Task":
			if l.quiesceFault(this) && quiesceRE.Match(body) {
				body = soapThisRE.ReplaceAll(body, labThis)
				body = bytes.Replace(body, []byte("</quiesce>"),
					[]byte("</quiesce><description>vm:"+this+"</description>"), 1)
			}
		}
		vmOfSnapshot := ""
		var vmsnBefore map[string]bool
		switch method {
		case "RemoveSnapshot_Task":
			ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: this}
			if snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot); ok {
				vmOfSnapshot = snap.Vm.Value
			}
			l.keepFiles(vmOfSnapshot)
		case "RemoveAllSnapshots_Task":
			l.keepFiles(this)
		case "CreateSnapshot_Task":
			vmsnBefore = l.snapshotFilesBefore(this)
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
		switch method {
		case "ReconfigVM_Task":
			l.afterReconfigure(this)
		case "CreateVM_Task":
			l.adoptCreated()
		case "Destroy_Task":
			l.forget(this)
		case "CreateSnapshot_Task":
			l.afterSnapshot(this)
			l.syncRootSnapshot(this)
			l.noteSnapshotFile(this, vmsnBefore)
		case "RemoveAllSnapshots_Task":
			l.syncRootSnapshot(this)
			l.removeGoneSnapshotFiles()
		case "RemoveSnapshot_Task":
			l.syncRootSnapshot(vmOfSnapshot)
			l.removeGoneSnapshotFiles()
		}
	})
}

func (l *Lab) quiesceFault(ref string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.vms[ref]
	return st != nil && st.quiesceFault
}
