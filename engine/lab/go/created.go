package main

import (
	"log"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// VMs made while the lab runs (a restore's): followed like the ones made at start, and
// CreateVM_Task refused on request.

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

func (l *Lab) createRefusal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refuseCreate
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
