package main

import (
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Disk content is a repeating pattern of granules: data (pseudo-random, seeded by the disk
// and offset, so the same lab always holds the same bytes), explicitly written zeroes, and
// holes (never written, so the flat file is sparse there).
const contentPattern = "DZHDHHDZ"

// fullGranule lays the pattern over the whole of a seed-site disk; generated VMs (there may
// be thousands) only get it over their first few small granules.
const (
	fullGranule  = 1 << 20
	smallGranule = 4096
	smallExtent  = 8 * smallGranule
)

func seedOf(parts ...string) int64 {
	h := fnv.New64a()
	h.Write([]byte(strings.Join(parts, "\x00")))
	return int64(h.Sum64())
}

// fillData writes deterministic pseudo-random bytes for buf at offset off.
func fillData(buf []byte, seed int64, off int64) {
	rand.New(rand.NewSource(seed ^ off)).Read(buf)
}

// writeContent lays the content pattern over the first `extent` bytes of the flat file.
func writeContent(f *os.File, capacity, granule, extent int64, seed int64) error {
	if err := f.Truncate(capacity); err != nil {
		return err
	}
	buf := make([]byte, granule)
	zero := make([]byte, granule)
	for i := int64(0); i*granule < extent && i*granule < capacity; i++ {
		off := i * granule
		n := granule
		if capacity-off < n {
			n = capacity - off
		}
		switch contentPattern[i%int64(len(contentPattern))] {
		case 'D':
			fillData(buf[:n], seed, off)
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return err
			}
		case 'Z':
			if _, err := f.WriteAt(zero[:n], off); err != nil {
				return err
			}
		}
	}
	return nil
}

// flatName is the extent file beside a descriptor: "x.vmdk" -> "x-flat.vmdk".
func flatName(descriptor string) string {
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

// writeDisk writes a VMDK descriptor at path and its flat extent beside it, with the
// content pattern over the whole disk (full) or over its first few small granules.
func writeDisk(path string, capacity int64, full bool, seed int64) error {
	granule, extent := int64(smallGranule), int64(smallExtent)
	if full {
		granule, extent = fullGranule, capacity
	}
	return writeDiskFiles(path, capacity, granule, extent, seed)
}

// writeEmptyDisk writes the descriptor and an all-hole flat extent: a new disk, as
// CreateVM_Task makes it (vcsim itself leaves both files empty).
func writeEmptyDisk(path string, capacity int64, seed int64) error {
	return writeDiskFiles(path, capacity, smallGranule, 0, seed)
}

func writeDiskFiles(path string, capacity, granule, extent int64, seed int64) error {
	flat := flatName(path)
	f, err := os.OpenFile(flat, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := writeContent(f, capacity, granule, extent, seed); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return writeDescriptor(path, capacity, seed)
}

// writeDescriptor writes the VMDK descriptor of a flat extent of capacity bytes.
func writeDescriptor(path string, capacity int64, seed int64) error {
	flat := flatName(path)
	sectors := capacity / 512
	cylinders := sectors / (255 * 63)
	if cylinders < 1 {
		cylinders = 1
	}
	descriptor := fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=%08x
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d VMFS "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.thinProvisioned = "1"
ddb.virtualHWVersion = "13"
`, uint32(seed), sectors, filepath.Base(flat), cylinders)
	return os.WriteFile(path, []byte(descriptor), 0o644)
}

// allocatedExtents lists the allocated byte ranges of a file in [start, end), found with
// SEEK_DATA/SEEK_HOLE, the way ESX answers QueryChangedDiskAreas for change id "*".
func allocatedExtents(path string, start, end int64) ([][2]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const seekData, seekHole = 3, 4
	var out [][2]int64
	off := start
	for off < end {
		data, err := syscall.Seek(int(f.Fd()), off, seekData)
		if err != nil {
			if err == syscall.ENXIO {
				break
			}
			return nil, err
		}
		if data >= end {
			break
		}
		hole, err := syscall.Seek(int(f.Fd()), data, seekHole)
		if err != nil {
			return nil, err
		}
		if hole > end {
			hole = end
		}
		out = append(out, [2]int64{data, hole - data})
		off = hole
	}
	return out, nil
}
