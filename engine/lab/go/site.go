package main

import (
	"context"
	"fmt"
	"io/ioutil"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// seedSite builds the seed's site beside the simulator's own inventory: datacenter
// DatabanxDC, VM pgtest1 with two disks of different sizes (device keys 2000 and 2001)
// and a vmxnet3 NIC on "VM Network", and a VM whose name has a space, in a nested folder
// (/DatabanxDC/vm/Prod/Web Tier/web 01); with -fs-images, fstest1 (fsvm.go).
type seedSite struct {
	client  *vim25.Client
	dsRoot  string
	diskMiB int64
	// secondDiskMiB, when not 0, sizes the second disk (a benchmark that times one big
	// disk keeps the other small); else it is 5/3 of the first.
	secondDiskMiB int64
	// fsImageDir, when set, holds the images of fstest1's disks (fsvm.go); fsImages is
	// filled from it.
	fsImageDir string
	fsImages   fsImages
}

const seedDatastore = "DatabanxDS"

func (s *seedSite) build(ctx context.Context) error {
	dc, err := object.NewRootFolder(s.client).CreateDatacenter(ctx, "DatabanxDC")
	if err != nil {
		return err
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	cluster, err := folders.HostFolder.CreateCluster(ctx, "DatabanxCluster", types.ClusterConfigSpecEx{})
	if err != nil {
		return err
	}
	var hosts []*object.HostSystem
	for i := 1; i <= 2; i++ {
		spec := types.HostConnectSpec{HostName: fmt.Sprintf("esx%02d.databanx.lab", i)}
		task, err := cluster.AddHost(ctx, spec, true, nil, nil)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return err
		}
		hosts = append(hosts, object.NewHostSystem(s.client, info.Result.(types.ManagedObjectReference)))
	}
	dir, err := ioutil.TempDir(s.dsRoot, seedDatastore+"-")
	if err != nil {
		return err
	}
	for _, host := range hosts {
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if _, err := dss.CreateLocalDatastore(ctx, seedDatastore, dir); err != nil {
			return err
		}
	}
	pool, err := cluster.ResourcePool(ctx)
	if err != nil {
		return err
	}
	prod, err := folders.VmFolder.CreateFolder(ctx, "Prod")
	if err != nil {
		return err
	}
	web, err := prod.CreateFolder(ctx, "Web Tier")
	if err != nil {
		return err
	}
	second := s.diskMiB * 5 / 3
	if s.secondDiskMiB > 0 {
		second = s.secondDiskMiB
	}
	if err := s.createVM(ctx, folders.VmFolder, pool, hosts[0], vmSpec{
		name: "pgtest1", guest: "ubuntu64Guest", cpus: 2, memoryMB: 4096, cbt: true,
		disksMiB: []int64{s.diskMiB, second}, networks: []string{"VM Network"},
		annotation: "Seed site database VM",
	}); err != nil {
		return err
	}
	if err := s.createVM(ctx, web, pool, hosts[1], vmSpec{
		name: "web 01", guest: "rhel8_64Guest", cpus: 1, memoryMB: 2048, cbt: false,
		disksMiB: []int64{8},
	}); err != nil {
		return err
	}
	if s.fsImageDir == "" {
		return nil
	}
	return s.createFSVM(ctx, folders.VmFolder, pool, hosts[0])
}

type vmSpec struct {
	name       string
	guest      string
	cpus       int32
	memoryMB   int64
	cbt        bool
	disksMiB   []int64
	networks   []string // a vmxnet3 NIC on each, keys 4000 on
	annotation string
}

func (s *seedSite) createVM(ctx context.Context, folder *object.Folder, pool *object.ResourcePool,
	host *object.HostSystem, v vmSpec) error {
	config := types.VirtualMachineConfigSpec{
		Name:                  v.name,
		GuestId:               v.guest,
		NumCPUs:               v.cpus,
		MemoryMB:              v.memoryMB,
		ChangeTrackingEnabled: types.NewBool(v.cbt),
		Annotation:            v.annotation,
		Files:                 &types.VirtualMachineFileInfo{VmPathName: "[" + seedDatastore + "]"},
	}
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("lsilogic")
	if err != nil {
		return err
	}
	scsi.GetVirtualDevice().Key = 1000
	config.DeviceChange = append(config.DeviceChange, &types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd,
		Device:    scsi,
	})
	for i, mib := range v.disksMiB {
		file := vmdkName(v.name, i)
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(2000 + i),
				ControllerKey: 1000,
				UnitNumber:    types.NewInt32(int32(i)),
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					DiskMode:        string(types.VirtualDiskModePersistent),
					ThinProvisioned: types.NewBool(true),
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[%s] %s/%s", seedDatastore, v.name, file),
					},
				},
			},
			CapacityInKB:    mib * 1024,
			CapacityInBytes: mib << 20,
		}
		config.DeviceChange = append(config.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk,
		})
	}
	for i, network := range v.networks {
		nic := &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
			VirtualDevice: types.VirtualDevice{
				Key: int32(4000 + i),
				Backing: &types.VirtualEthernetCardNetworkBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: network},
				},
			},
			AddressType: string(types.VirtualEthernetCardMacTypeGenerated),
		}}}
		config.DeviceChange = append(config.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device:    nic,
		})
	}
	task, err := folder.CreateVM(ctx, config, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return fmt.Errorf("creating %s: %w", v.name, err)
	}
	vm := object.NewVirtualMachine(s.client, info.Result.(types.ManagedObjectReference))
	power, err := vm.PowerOn(ctx)
	if err != nil {
		return err
	}
	return power.Wait(ctx)
}
