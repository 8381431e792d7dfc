package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/object"
)

// The file-system VM: fstest1's disks hold images with real file systems (built by
// engine/lab/fsimages.py, handed over with -fs-images): disk 2000 a GPT disk with an ext4
// and an NTFS partition, disk 2001 one FAT file system without a partition table.
const fsVMName = "fstest1"

// fsImageFiles names the images in the -fs-images folder, in disk order (2000, 2001).
var fsImageFiles = []string{"gpt.raw", "fat.raw"}

// fsImages maps a disk's descriptor name ("fstest1.vmdk", "fstest1_1.vmdk") to its image.
type fsImages map[string]string

func vmdkName(vm string, i int) string {
	if i == 0 {
		return vm + ".vmdk"
	}
	return fmt.Sprintf("%s_%d.vmdk", vm, i)
}

// fsDiskSizes reads the images' sizes (whole MiB: the disks' capacities).
func fsDiskSizes(dir string) ([]int64, fsImages, error) {
	var sizes []int64
	images := fsImages{}
	for i, name := range fsImageFiles {
		image := filepath.Join(dir, name)
		st, err := os.Stat(image)
		if err != nil {
			return nil, nil, err
		}
		if st.Size()%(1<<20) != 0 {
			return nil, nil, fmt.Errorf("%s: %d bytes is not whole MiB", image, st.Size())
		}
		sizes = append(sizes, st.Size()>>20)
		images[vmdkName(fsVMName, i)] = image
	}
	return sizes, images, nil
}

func (s *seedSite) createFSVM(ctx context.Context, folder *object.Folder, pool *object.ResourcePool,
	host *object.HostSystem) error {
	sizes, images, err := fsDiskSizes(s.fsImageDir)
	if err != nil {
		return err
	}
	s.fsImages = images
	return s.createVM(ctx, folder, pool, host, vmSpec{
		name: fsVMName, guest: "ubuntu64Guest", cpus: 1, memoryMB: 1024, cbt: true,
		disksMiB: sizes, networks: []string{"VM Network"},
		annotation: "File systems with known files (ext4 + NTFS on GPT, FAT)",
	})
}

// writeImageDisk writes the descriptor at path and its flat extent as a sparse copy of
// image: blocks of zeroes stay holes, as a thin disk keeps them.
func writeImageDisk(path, image string, capacity, seed int64) error {
	src, err := os.Open(image)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(flatName(path), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := copySparse(dst, src, capacity); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return writeDescriptor(path, capacity, seed)
}

func copySparse(dst *os.File, src io.Reader, capacity int64) error {
	if err := dst.Truncate(capacity); err != nil {
		return err
	}
	const block = 64 << 10
	buf := make([]byte, block)
	zero := make([]byte, block)
	for off := int64(0); off < capacity; off += block {
		n, err := io.ReadFull(src, buf)
		if err == io.EOF {
			return nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
	}
	return nil
}
