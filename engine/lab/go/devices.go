package main

import (
	"fmt"
	"net/http"
	"os"
	"path"
	"reflect"
	"strconv"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Disk changes between two backups, as an administrator makes them with ReconfigVM_Task:
// growing a disk and adding one. Both replace device objects instead of editing them, since
// a snapshot's config shares the VM's (see syncChangeIDs): older snapshots keep the disks
// they were taken with, later ones see the change.

const mib = 1 << 20

func hasSnapshots(vm *simulator.VirtualMachine) bool {
	return vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0
}

// resize grows disk `disk` to `mib` MiB: the device's capacity, the flat file's size and
// the descriptor's extent. Refused while the VM has snapshots (ESX cannot extend a disk
// with a delta chain) and for a shrink (ESX never shrinks).
//
// Change tracking is kept as it was, as ESX keeps it across a grow: same uuid, same
// sequence, and the added range is no change (it is a hole that reads as zero). Sendense
// does not rely on that: a disk whose capacity differs from its parent point's is copied
// whole, so the lab need not model ESX's old grow bugs (KB 2090639) either.
func (l *Lab) resize(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	d, key, err := l.disk(vm, r)
	if err != nil {
		return nil, err
	}
	size, err := intParam(r, "mib")
	if err != nil {
		return nil, err
	}
	capacity := size * mib
	if capacity <= d.capacity {
		return nil, badRequest("disk %d is %d bytes: a resize can only grow it (asked %d MiB)", key, d.capacity, size)
	}
	if hasSnapshots(vm) {
		return nil, &apiError{http.StatusConflict, fmt.Sprintf("%s has snapshots: a disk with snapshots cannot be extended", vm.Name)}
	}
	i, disk := findDisk(vm, key)
	backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	descriptor, err := datastoreFile(vm, backing.FileName)
	if err != nil {
		return nil, err
	}
	if err := os.Truncate(d.flat, capacity); err != nil {
		return nil, err
	}
	if err := writeDescriptor(descriptor, capacity, seedOf(vm.Name, strconv.Itoa(int(key)))); err != nil {
		return nil, err
	}
	d.capacity = capacity
	grown := *disk
	grown.CapacityInBytes, grown.CapacityInKB = capacity, capacity/1024
	devices := append([]types.BaseVirtualDevice(nil), vm.Config.Hardware.Device...)
	devices[i] = &grown
	vm.Config.Hardware.Device = devices
	l.syncChangeIDs(vm)
	return map[string]interface{}{"vm": vm.Self.Value, "disk": key, "capacity_bytes": capacity, "change_id": d.changeID()}, nil
}

// addDisk adds a disk of `mib` MiB to the VM: the next free device key, the next free unit
// on the controller of the VM's first disk, a descriptor and a flat file beside the first
// disk's, holding the seed disks' content pattern (deterministic, seeded by VM and key).
// The VM's change tracking covers it at once when it is active, with an epoch of its own.
func (l *Lab) addDisk(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	size, err := intParam(r, "mib")
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, badRequest("parameter mib must be positive")
	}
	var first *types.VirtualDisk
	key := int32(2000)
	for _, dev := range vm.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok {
			if first == nil {
				first = disk
			}
			if disk.Key >= key {
				key = disk.Key + 1
			}
		}
	}
	if first == nil {
		return nil, badRequest("%s has no disk to place a new one beside", vm.Name)
	}
	unit, err := freeUnit(vm, first.ControllerKey)
	if err != nil {
		return nil, err
	}
	firstBacking := first.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	var dsPath object.DatastorePath
	dsPath.FromString(firstBacking.FileName)
	fileName, descriptor, err := freeDiskFile(vm, dsPath)
	if err != nil {
		return nil, err
	}
	capacity := size * mib
	if err := writeDisk(descriptor, capacity, true, seedOf(vm.Name, strconv.Itoa(int(key)))); err != nil {
		return nil, err
	}
	backing := *firstBacking
	backing.FileName, backing.ChangeId, backing.Uuid = fileName, "", uuid.New().String()
	disk := &types.VirtualDisk{
		VirtualDevice: types.VirtualDevice{
			Key:           key,
			ControllerKey: first.ControllerKey,
			UnitNumber:    types.NewInt32(unit),
			Backing:       &backing,
			DeviceInfo:    &types.Description{Label: fmt.Sprintf("Hard disk %d", key-1999), Summary: fmt.Sprintf("%d KB", capacity/1024)},
		},
		CapacityInKB:    capacity / 1024,
		CapacityInBytes: capacity,
	}
	devices := make([]types.BaseVirtualDevice, 0, len(vm.Config.Hardware.Device)+1)
	for _, dev := range vm.Config.Hardware.Device {
		if ctl, ok := dev.(types.BaseVirtualController); ok && dev.GetVirtualDevice().Key == first.ControllerKey {
			dev = withChild(ctl, key)
		}
		devices = append(devices, dev)
	}
	vm.Config.Hardware.Device = append(devices, disk)
	d := &diskState{flat: flatName(descriptor), capacity: capacity}
	d.reset()
	l.disks[diskID(vm.Self, key)] = d
	l.syncChangeIDs(vm)
	result := map[string]interface{}{"vm": vm.Self.Value, "disk": key, "capacity_bytes": capacity, "file": fileName}
	if st := l.vms[vm.Self.Value]; st != nil && st.active {
		result["change_id"] = d.changeID()
	}
	return result, nil
}

func findDisk(vm *simulator.VirtualMachine, key int32) (int, *types.VirtualDisk) {
	for i, dev := range vm.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == key {
			return i, disk
		}
	}
	return -1, nil
}

// freeUnit is the lowest unit number no device uses on the controller (7 is the SCSI
// controller's own).
func freeUnit(vm *simulator.VirtualMachine, controller int32) (int32, error) {
	used := map[int32]bool{7: true}
	for _, dev := range vm.Config.Hardware.Device {
		d := dev.GetVirtualDevice()
		if d.ControllerKey == controller && d.UnitNumber != nil {
			used[*d.UnitNumber] = true
		}
	}
	for unit := int32(0); unit < 16; unit++ {
		if !used[unit] {
			return unit, nil
		}
	}
	return 0, badRequest("controller %d of %s has no free unit", controller, vm.Name)
}

// freeDiskFile names the next "<vm>_<n>.vmdk" in the first disk's folder that is not there.
func freeDiskFile(vm *simulator.VirtualMachine, first object.DatastorePath) (string, string, error) {
	dir := path.Dir(first.Path)
	for i := 1; ; i++ {
		candidate := object.DatastorePath{Datastore: first.Datastore, Path: path.Join(dir, vmdkName(vm.Name, i))}
		name := candidate.String()
		local, err := datastoreFile(vm, name)
		if err != nil {
			return "", "", err
		}
		if _, err := os.Stat(local); os.IsNotExist(err) {
			return name, local, nil
		}
	}
}

// withChild is a copy of the controller (of whichever type) that also lists the device key.
func withChild(ctl types.BaseVirtualController, key int32) types.BaseVirtualDevice {
	v := reflect.ValueOf(ctl).Elem()
	copied := reflect.New(v.Type())
	copied.Elem().Set(v)
	c := copied.Interface().(types.BaseVirtualController).GetVirtualController()
	c.Device = append(append([]int32(nil), c.Device...), key)
	return copied.Interface().(types.BaseVirtualDevice)
}
