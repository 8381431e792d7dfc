package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

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

// unknownChangeID is ESX's answer to a change id the disk's tracking does not know (another
// epoch, a sequence from the future, garbage): a FileFault on the disk, "Error caused by
// file", with nothing that says the id was the cause.
func unknownChangeID(file string) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: simulator.Fault("Error caused by file "+file, &types.FileFault{File: file})}
}

// QueryChangedDiskAreas answers for the disk as it was at req.Snapshot: the areas changed
// since req.ChangeId, or the allocated areas for "*", from req.StartOffset on.
func (s *cbtService) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	if req.Snapshot == nil {
		return qcdaFault("the lab answers QueryChangedDiskAreas for a snapshot only")
	}
	snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return &methods.QueryChangedDiskAreasBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: *req.Snapshot})}
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
	backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	atSnapshot := backing.ChangeId
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
		snapUUID, snapSeq, _ := splitChangeID(atSnapshot)
		if err != nil || fromUUID != snapUUID || fromSeq < 0 || fromSeq > snapSeq || fromUUID != d.uuid {
			return unknownChangeID(backing.FileName)
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
