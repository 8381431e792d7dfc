package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
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
}

func newLab() *Lab {
	lab := &Lab{disks: map[string]*diskState{}, vms: map[string]*vmState{}}
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

// prepareDisks writes a descriptor and flat file behind every disk of every VM and starts
// change tracking for the VMs created with it enabled.
func (l *Lab) prepareDisks() error {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		renumberDisks(vm)
		full := seedVMs[vm.Name]
		err := l.adopt(vm, func(file string, capacity, seed int64) error {
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

// adoptCreated follows the VMs CreateVM_Task made since the last call: their devices get
// ESX's keys and their disks a descriptor and an empty (all-hole) flat extent where vcsim
// leaves two empty files, so that a restore can write them and a backup read them.
func (l *Lab) adoptCreated() {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.vms[vm.Self.Value] != nil {
				return
			}
			renumberCreated(vm)
			dropEmptyNetworks(vm)
			if err := l.adopt(vm, writeEmptyDisk); err != nil {
				log.Printf("lab: the disks of new VM %s: %v", vm.Name, err)
			}
		})
	}
}

// forget stops following a VM that Destroy_Task removed.
func (l *Lab) forget(ref string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.vms[ref] == nil {
		return
	}
	if _, still := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine); still {
		return
	}
	delete(l.vms, ref)
	for id := range l.disks {
		if strings.HasPrefix(id, ref+"/") {
			delete(l.disks, id)
		}
	}
}

// dropEmptyNetworks removes the empty reference vcsim lists in a VM's `network` for a NIC
// on no network (one whose network was not found at a restore), which no client can read.
func dropEmptyNetworks(vm *simulator.VirtualMachine) {
	networks := vm.Network[:0]
	for _, ref := range vm.Network {
		if ref.Value != "" {
			networks = append(networks, ref)
		}
	}
	vm.Network = networks
}

// renumberCreated gives a new VM's devices the keys ESX gives them (SCSI controllers
// 1000 + bus, disks 2000 on, NICs 4000 on): vcsim numbers new devices from 202.
func renumberCreated(vm *simulator.VirtualMachine) {
	used := map[int32]bool{}
	for _, dev := range vm.Config.Hardware.Device {
		used[dev.GetVirtualDevice().Key] = true
	}
	renamed := map[int32]int32{}
	nextDisk, nextNIC := int32(2000), int32(4000)
	for _, dev := range vm.Config.Hardware.Device {
		d := dev.GetVirtualDevice()
		var want int32
		switch x := dev.(type) {
		case types.BaseVirtualSCSIController:
			want = 1000 + x.GetVirtualSCSIController().BusNumber
		case *types.VirtualDisk:
			want, nextDisk = nextDisk, nextDisk+1
		case types.BaseVirtualEthernetCard:
			want, nextNIC = nextNIC, nextNIC+1
		default:
			continue
		}
		if want != d.Key && !used[want] {
			renamed[d.Key], used[want] = want, true
			delete(used, d.Key)
			d.Key = want
		}
	}
	for _, dev := range vm.Config.Hardware.Device {
		d := dev.GetVirtualDevice()
		if key, ok := renamed[d.ControllerKey]; ok {
			d.ControllerKey = key
		}
	}
	if vm.LayoutEx != nil {
		for i := range vm.LayoutEx.Disk {
			if key, ok := renamed[vm.LayoutEx.Disk[i].Key]; ok {
				vm.LayoutEx.Disk[i].Key = key
			}
		}
	}
	if vm.Guest != nil {
		for i := range vm.Guest.Net {
			if key, ok := renamed[vm.Guest.Net[i].DeviceConfigId]; ok {
				vm.Guest.Net[i].DeviceConfigId = key
			}
		}
	}
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
		if method == "RemoveSnapshot_Task" {
			ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: this}
			if snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot); ok {
				vmOfSnapshot = snap.Vm.Value
			}
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
		case "RemoveAllSnapshots_Task":
			l.syncRootSnapshot(this)
		case "RemoveSnapshot_Task":
			l.syncRootSnapshot(vmOfSnapshot)
		}
	})
}

func (l *Lab) createRefusal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refuseCreate
}

func (l *Lab) quiesceFault(ref string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.vms[ref]
	return st != nil && st.quiesceFault
}

type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...interface{}) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func intParam(r *http.Request, name string) (int64, error) {
	v, err := strconv.ParseInt(r.URL.Query().Get(name), 10, 64)
	if err != nil {
		return 0, badRequest("parameter %s must be an integer", name)
	}
	return v, nil
}

// serveAPI answers POST /sendense/{write,reset,quiesce-fault}?vm=NAME|MOREF&... and
// POST /sendense/refuse-create-vm?reason=TEXT (an empty reason ends the refusal).
func (l *Lab) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var result map[string]interface{}
	if r.URL.Path == "/sendense/refuse-create-vm" {
		l.mu.Lock()
		l.refuseCreate = r.URL.Query().Get("reason")
		l.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"refuse_create_vm": l.createRefusal()})
		return
	}
	vm, err := l.findVM(r.URL.Query().Get("vm"))
	if err != nil {
		err = &apiError{http.StatusNotFound, err.Error()}
	} else {
		simulator.Map.WithLock(vm, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			switch strings.TrimPrefix(r.URL.Path, "/sendense/") {
			case "write":
				result, err = l.write(vm, r)
			case "reset":
				result, err = l.reset(vm, r)
			case "quiesce-fault":
				on := r.URL.Query().Get("enabled") != "0"
				l.vms[vm.Self.Value].quiesceFault = on
				result = map[string]interface{}{"vm": vm.Self.Value, "quiesce_fault": on}
			default:
				err = &apiError{http.StatusNotFound, "unknown lab call " + r.URL.Path}
			}
		})
	}
	if err != nil {
		code := http.StatusInternalServerError
		if ae, ok := err.(*apiError); ok {
			code = ae.code
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(result)
}

func (l *Lab) disk(vm *simulator.VirtualMachine, r *http.Request) (*diskState, int32, error) {
	key, err := intParam(r, "disk")
	if err != nil {
		return nil, 0, err
	}
	d := l.disks[diskID(vm.Self, int32(key))]
	if d == nil {
		return nil, 0, badRequest("%s has no disk with key %d", vm.Name, key)
	}
	return d, int32(key), nil
}

// write puts deterministic new data (seeded by the disk's change id) into the flat file
// and records the range as one change.
func (l *Lab) write(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	d, key, err := l.disk(vm, r)
	if err != nil {
		return nil, err
	}
	offset, err := intParam(r, "offset")
	if err != nil {
		return nil, err
	}
	length, err := intParam(r, "length")
	if err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 || offset+length > d.capacity {
		return nil, badRequest("range %d+%d is outside disk %d (%d bytes)", offset, length, key, d.capacity)
	}
	f, err := os.OpenFile(d.flat, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	seed := seedOf(d.changeID(), "write")
	for done := int64(0); done < length; {
		n := int64(len(buf))
		if length-done < n {
			n = length - done
		}
		fillData(buf[:n], seed, offset+done)
		if _, err := f.WriteAt(buf[:n], offset+done); err != nil {
			return nil, err
		}
		done += n
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	d.seq++
	d.changes = append(d.changes, change{d.seq, offset, length})
	l.syncChangeIDs(vm)
	return map[string]interface{}{"vm": vm.Self.Value, "disk": key, "change_id": d.changeID()}, nil
}

// reset starts a new change tracking epoch for the disk, as ESX does after some events
// (a disk resize, a restore): old change ids no longer apply.
func (l *Lab) reset(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	d, key, err := l.disk(vm, r)
	if err != nil {
		return nil, err
	}
	d.reset()
	l.syncChangeIDs(vm)
	return map[string]interface{}{"vm": vm.Self.Value, "disk": key, "change_id": d.changeID()}, nil
}

// cbtService is the managed object that answers the SOAP calls the handler redirects.
type cbtService struct {
	lab *Lab
}

func (s *cbtService) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SendenseLab", Value: "sendense-lab"}
}

// maxAreasPerCall keeps answers partial, as ESX's are, so that callers must loop.
const maxAreasPerCall = 8

func qcdaFault(msg string) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: simulator.Fault(msg, &types.InvalidArgument{InvalidProperty: "changeId"})}
}

// QueryChangedDiskAreas answers for the disk as it was at req.Snapshot: the areas changed
// since req.ChangeId, or the allocated areas for "*", from req.StartOffset on.
func (s *cbtService) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	if req.Snapshot == nil {
		return qcdaFault("the lab answers QueryChangedDiskAreas for a snapshot only")
	}
	snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return qcdaFault("snapshot not found")
	}
	var disk *types.VirtualDisk
	for _, dev := range snap.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return qcdaFault(fmt.Sprintf("no disk with key %d in the snapshot", req.DeviceKey))
	}
	atSnapshot := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId
	if atSnapshot == "" {
		return qcdaFault("change tracking was not active when the snapshot was taken")
	}
	s.lab.mu.Lock()
	defer s.lab.mu.Unlock()
	d := s.lab.disks[diskID(snap.Vm, req.DeviceKey)]
	if d == nil {
		return qcdaFault(fmt.Sprintf("the lab does not track disk %d", req.DeviceKey))
	}
	capacity := d.capacity
	var areas [][2]int64
	if req.ChangeId == "*" {
		var err error
		if areas, err = allocatedExtents(d.flat, req.StartOffset, capacity); err != nil {
			return qcdaFault(err.Error())
		}
	} else {
		fromUUID, fromSeq, err := splitChangeID(req.ChangeId)
		if err != nil {
			return qcdaFault(err.Error())
		}
		snapUUID, snapSeq, _ := splitChangeID(atSnapshot)
		if fromUUID != snapUUID || fromSeq > snapSeq || fromUUID != d.uuid {
			return qcdaFault(fmt.Sprintf("change id %s does not apply to this disk (now %s)", req.ChangeId, atSnapshot))
		}
		for _, c := range d.changes {
			if c.seq > fromSeq && c.seq <= snapSeq {
				areas = append(areas, [2]int64{c.offset, c.length})
			}
		}
		areas = clip(merge(areas), req.StartOffset)
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: capacity - req.StartOffset}
	if len(areas) > maxAreasPerCall {
		areas = areas[:maxAreasPerCall]
		last := areas[len(areas)-1]
		info.Length = last[0] + last[1] - req.StartOffset
	}
	for _, a := range areas {
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a[0], Length: a[1]})
	}
	return &methods.QueryChangedDiskAreasBody{Res: &types.QueryChangedDiskAreasResponse{Returnval: info}}
}

// CreateSnapshotTask answers a quiesced snapshot of a VM set up to fail quiescing.
func (s *cbtService) CreateSnapshotTask(req *types.CreateSnapshot_Task) soap.HasFault {
	vm := types.ManagedObjectReference{Type: "VirtualMachine", Value: strings.TrimPrefix(req.Description, "vm:")}
	task := simulator.CreateTask(vmRef(vm), "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.ApplicationQuiesceFault{}
	})
	return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: task.Run()}}
}

// CreateVMTask answers CreateVM_Task while the lab is told to refuse it: a task that
// fails with the reason as vCenter's message (vcsim's own messages are Go type names).
func (s *cbtService) CreateVMTask(req *types.CreateVM_Task) soap.HasFault {
	reason := s.lab.createRefusal()
	fault := &types.GenericVmConfigFault{Reason: reason}
	task := simulator.CreateTask(vmRef(req.Pool), "createVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, fault
	})
	ref := task.Run()
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.error", Val: types.LocalizedMethodFault{Fault: fault, LocalizedMessage: reason}},
	})
	return &methods.CreateVM_TaskBody{Res: &types.CreateVM_TaskResponse{Returnval: ref}}
}

type vmRef types.ManagedObjectReference

func (r vmRef) Reference() types.ManagedObjectReference { return types.ManagedObjectReference(r) }

func splitChangeID(id string) (string, int64, error) {
	i := strings.LastIndex(id, "/")
	if i < 0 {
		return "", 0, fmt.Errorf("change id %q is not <uuid>/<sequence>", id)
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("change id %q is not <uuid>/<sequence>", id)
	}
	return id[:i], seq, nil
}

// merge sorts ranges and joins overlapping or touching ones.
func merge(areas [][2]int64) [][2]int64 {
	sort.Slice(areas, func(i, j int) bool { return areas[i][0] < areas[j][0] })
	var out [][2]int64
	for _, a := range areas {
		if n := len(out); n > 0 && a[0] <= out[n-1][0]+out[n-1][1] {
			if end := a[0] + a[1]; end > out[n-1][0]+out[n-1][1] {
				out[n-1][1] = end - out[n-1][0]
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

// clip drops what lies before start.
func clip(areas [][2]int64, start int64) [][2]int64 {
	var out [][2]int64
	for _, a := range areas {
		end := a[0] + a[1]
		if end <= start {
			continue
		}
		if a[0] < start {
			a = [2]int64{start, end - start}
		}
		out = append(out, a)
	}
	return out
}
