//! The real [`Device`]: ioctls and mmap on a V4L2 node, with the `v4l` crate's kernel
//! bindings (`v4l2-sys-mit`) and its ioctl wrapper. The only `unsafe` of the M2M encoder.
//!
//! Opened non-blocking: DQBUF never waits, [`Device::wait`] polls with a timeout. Mappings
//! belong to the `Sys` that made them and are unmapped when its buffers are freed or it is
//! dropped, before the descriptor closes.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys::{
    self as k, v4l2_buffer, v4l2_capability, v4l2_control, v4l2_fmtdesc, v4l2_format, v4l2_plane, v4l2_requestbuffers,
    v4l2_selection, v4l2_streamparm,
};

use super::{Caps, Dequeued, Device, Format, Queue, Side, Why};

const MEMORY_MMAP: u32 = k::v4l2_memory_V4L2_MEMORY_MMAP;
/// Progressive pictures.
const FIELD_NONE: u32 = k::v4l2_field_V4L2_FIELD_NONE;

// The numbers the rest of the module uses without the bindings (it builds without the `v4l2`
// feature) are the kernel headers' own.
const _: () = {
    use super::{cap, cid, Queue, Side};
    assert!(cid::BITRATE == k::V4L2_CID_MPEG_VIDEO_BITRATE);
    assert!(cid::REPEAT_SEQ_HEADER == k::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER);
    assert!(cid::FORCE_KEY_FRAME == k::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME);
    assert!(cid::H264_I_PERIOD == k::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD);
    assert!(cid::H264_LEVEL == k::V4L2_CID_MPEG_VIDEO_H264_LEVEL);
    assert!(cid::H264_PROFILE == k::V4L2_CID_MPEG_VIDEO_H264_PROFILE);
    assert!(cap::M2M == k::V4L2_CAP_VIDEO_M2M && cap::M2M_MPLANE == k::V4L2_CAP_VIDEO_M2M_MPLANE);
    assert!(cap::STREAMING == k::V4L2_CAP_STREAMING);
    assert!(super::FLAG_KEYFRAME == k::V4L2_BUF_FLAG_KEYFRAME && super::FLAG_ERROR == k::V4L2_BUF_FLAG_ERROR);
    assert!(
        Queue { side: Side::Output, mplane: true }.buf_type() == k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
    );
    assert!(
        Queue { side: Side::Capture, mplane: true }.buf_type() == k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
    );
    assert!(Queue { side: Side::Output, mplane: false }.buf_type() == k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT);
    assert!(Queue { side: Side::Capture, mplane: false }.buf_type() == k::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE);
    // The generic ioctl encoding below (x86, Arm): VIDIOC_S_SELECTION is 0xc040565f.
    assert!(VIDIOC_S_SELECTION as u32 == 0xc040_565f);
};

/// `_IOWR('V', nr, T)`: v4l's table lacks VIDIOC_S_SELECTION.
const fn iowr(nr: u32, size: usize) -> vidioc::_IOC_TYPE {
    ((3u32 << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr) as vidioc::_IOC_TYPE
}
const VIDIOC_S_SELECTION: vidioc::_IOC_TYPE = iowr(95, std::mem::size_of::<v4l2_selection>());

/// One mapped buffer.
struct Map {
    ptr: *mut u8,
    len: usize,
}

/// An open V4L2 M2M node and its mapped buffers (`[OUTPUT, CAPTURE]`).
pub(super) struct Sys {
    fd: OwnedFd,
    maps: [Vec<Map>; 2],
}

// SAFETY: the mappings are plain shared memory owned by this value alone (no other Rust value
// points into them); moving it to another thread moves that ownership with it.
unsafe impl Send for Sys {}

fn slot(q: Queue) -> usize {
    match q.side {
        Side::Output => 0,
        Side::Capture => 1,
    }
}

/// A zeroed kernel struct.
///
/// # Safety
/// `T` must be plain data for which all-zero bytes are a valid value (the bindgen structs:
/// integers, arrays, unions of them and nullable raw pointers), never a reference.
unsafe fn zeroed<T: Copy>() -> T {
    // SAFETY: the caller's promise.
    unsafe { std::mem::zeroed() }
}

impl Sys {
    /// Opens `path` for an encoder (read-write, non-blocking).
    pub(super) fn open(path: &Path) -> Result<Sys, Why> {
        let f =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| match e
                .raw_os_error()
            {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => Why::Missing(path.to_path_buf()),
                Some(libc::EACCES) | Some(libc::EPERM) => Why::Denied(path.to_path_buf()),
                Some(libc::EBUSY) => {
                    Why::Io(path.to_path_buf(), format!("{e}; another program holds it (`fuser {}`)", path.display()))
                }
                _ => Why::Io(path.to_path_buf(), e.to_string()),
            })?;
        Ok(Sys { fd: f.into(), maps: [Vec::new(), Vec::new()] })
    }

    /// One ioctl with its argument struct, again when a signal interrupted it.
    fn ioctl<T>(&self, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
        loop {
            // SAFETY: every caller passes the struct `request` was defined for (its size is in
            // the request number), exclusively borrowed for the call; the descriptor is open
            // while `self` lives.
            let r = unsafe { v4l2::ioctl(self.fd.as_raw_fd(), request, (arg as *mut T).cast()) };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Unmaps the buffers of one queue.
    fn unmap(&mut self, q: usize) {
        for m in self.maps[q].drain(..) {
            // SAFETY: `ptr`/`len` are a mapping made in `buffers` and not unmapped since (it
            // was drained from the list); nothing borrows it: `memory`'s slices borrow `self`.
            if let Err(e) = unsafe { v4l2::munmap(m.ptr.cast(), m.len) } {
                log::warn!("H.264 encoder: munmap: {e}");
            }
        }
    }

    /// QUERYBUF buffer `index` and map it: its length.
    fn map(&mut self, q: Queue, index: u32) -> io::Result<usize> {
        // SAFETY: a kernel struct of plain data.
        let mut planes = [unsafe { zeroed::<v4l2_plane>() }; 1];
        // SAFETY: a kernel struct of plain data.
        let mut b = unsafe { zeroed::<v4l2_buffer>() };
        b.index = index;
        b.type_ = q.buf_type();
        b.memory = MEMORY_MMAP;
        if q.mplane {
            b.m.planes = planes.as_mut_ptr();
            b.length = 1;
        }
        self.ioctl(vidioc::VIDIOC_QUERYBUF, &mut b)?;
        let (len, offset) = if q.mplane {
            // SAFETY: `m.offset` is the union's member for MMAP planes, set by the kernel.
            (planes[0].length, unsafe { planes[0].m.mem_offset })
        } else {
            // SAFETY: `m.offset` is the union's member for MMAP buffers, set by the kernel.
            (b.length, unsafe { b.m.offset })
        };
        let len = len as usize;
        // SAFETY: a fresh shared mapping of the buffer the kernel just described (its length
        // and offset on this descriptor); no Rust memory is aliased.
        let ptr = unsafe {
            v4l2::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                offset as libc::off_t,
            )
        }?;
        self.maps[slot(q)].push(Map { ptr: ptr.cast(), len });
        Ok(len)
    }
}

impl Device for Sys {
    fn caps(&mut self) -> io::Result<Caps> {
        // SAFETY: a kernel struct of plain data.
        let mut c = unsafe { zeroed::<v4l2_capability>() };
        self.ioctl(vidioc::VIDIOC_QUERYCAP, &mut c)?;
        let text = |b: &[u8]| String::from_utf8_lossy(b.split(|&x| x == 0).next().unwrap_or(&[])).into_owned();
        // Device caps where the driver sets them (V4L2_CAP_DEVICE_CAPS), else the node's.
        let device_caps = if c.capabilities & k::V4L2_CAP_DEVICE_CAPS != 0 { c.device_caps } else { c.capabilities };
        Ok(Caps { driver: text(&c.driver), card: text(&c.card), device_caps })
    }

    fn formats(&mut self, q: Queue) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for index in 0..64 {
            // SAFETY: a kernel struct of plain data.
            let mut d = unsafe { zeroed::<v4l2_fmtdesc>() };
            d.index = index;
            d.type_ = q.buf_type();
            match self.ioctl(vidioc::VIDIOC_ENUM_FMT, &mut d) {
                Ok(()) => out.push(d.pixelformat),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn set_format(&mut self, q: Queue, want: &Format) -> io::Result<Format> {
        // SAFETY: a kernel struct of plain data.
        let mut f = unsafe { zeroed::<v4l2_format>() };
        f.type_ = q.buf_type();
        if q.mplane {
            // SAFETY: `pix_mp` is the union's member for the MPLANE buffer types set above.
            let p = unsafe { &mut f.fmt.pix_mp };
            (p.width, p.height, p.pixelformat, p.field, p.num_planes) =
                (want.width, want.height, want.fourcc, FIELD_NONE, 1);
            p.plane_fmt[0].bytesperline = want.bytesperline;
            p.plane_fmt[0].sizeimage = want.sizeimage;
        } else {
            // SAFETY: `pix` is the union's member for the single-planar buffer types.
            let p = unsafe { &mut f.fmt.pix };
            (p.width, p.height, p.pixelformat, p.field) = (want.width, want.height, want.fourcc, FIELD_NONE);
            (p.bytesperline, p.sizeimage) = (want.bytesperline, want.sizeimage);
        }
        self.ioctl(vidioc::VIDIOC_S_FMT, &mut f)?;
        Ok(if q.mplane {
            // SAFETY: as above; the kernel filled the same member.
            let p = unsafe { &f.fmt.pix_mp };
            let pf = p.plane_fmt[0];
            Format {
                fourcc: p.pixelformat,
                width: p.width,
                height: p.height,
                bytesperline: pf.bytesperline,
                sizeimage: pf.sizeimage,
                planes: p.num_planes,
            }
        } else {
            // SAFETY: as above.
            let p = unsafe { &f.fmt.pix };
            Format {
                fourcc: p.pixelformat,
                width: p.width,
                height: p.height,
                bytesperline: p.bytesperline,
                sizeimage: p.sizeimage,
                planes: 1,
            }
        })
    }

    fn set_crop(&mut self, q: Queue, width: u32, height: u32) -> io::Result<()> {
        // SAFETY: a kernel struct of plain data.
        let mut s = unsafe { zeroed::<v4l2_selection>() };
        // S_SELECTION takes the single-planar type for either API.
        s.type_ = Queue { side: q.side, mplane: false }.buf_type();
        s.target = k::V4L2_SEL_TGT_CROP;
        (s.r.width, s.r.height) = (width, height);
        self.ioctl(VIDIOC_S_SELECTION, &mut s)
    }

    fn set_fps(&mut self, q: Queue, fps: u32) -> io::Result<()> {
        // SAFETY: a kernel struct of plain data.
        let mut p = unsafe { zeroed::<v4l2_streamparm>() };
        p.type_ = q.buf_type();
        // SAFETY: `output` is the union's member for OUTPUT buffer types, which this is.
        let o = unsafe { &mut p.parm.output };
        (o.timeperframe.numerator, o.timeperframe.denominator) = (1, fps);
        self.ioctl(vidioc::VIDIOC_S_PARM, &mut p)
    }

    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        let mut c = v4l2_control { id, value };
        self.ioctl(vidioc::VIDIOC_S_CTRL, &mut c)
    }

    fn buffers(&mut self, q: Queue, count: u32) -> io::Result<Vec<usize>> {
        // Mappings go first: REQBUFS 0 fails (EBUSY) while a buffer is mapped.
        self.unmap(slot(q));
        // SAFETY: a kernel struct of plain data.
        let mut r = unsafe { zeroed::<v4l2_requestbuffers>() };
        (r.count, r.type_, r.memory) = (count, q.buf_type(), MEMORY_MMAP);
        self.ioctl(vidioc::VIDIOC_REQBUFS, &mut r)?;
        (0..r.count).map(|i| self.map(q, i)).collect()
    }

    fn memory(&mut self, q: Queue, index: usize) -> &mut [u8] {
        match self.maps[slot(q)].get(index) {
            // SAFETY: a live mapping of `len` bytes (unmapped only through `&mut self`, which
            // this borrow prevents until the slice is gone); the kernel writes CAPTURE buffers
            // only while they are queued, and camjobd reads them only dequeued.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.ptr, m.len) },
            None => &mut [],
        }
    }

    fn queue(&mut self, q: Queue, index: usize, bytesused: usize, stamp_us: u64) -> io::Result<()> {
        // SAFETY: a kernel struct of plain data.
        let mut planes = [unsafe { zeroed::<v4l2_plane>() }; 1];
        // SAFETY: a kernel struct of plain data.
        let mut b = unsafe { zeroed::<v4l2_buffer>() };
        (b.index, b.type_, b.memory, b.field) = (index as u32, q.buf_type(), MEMORY_MMAP, FIELD_NONE);
        b.timestamp.tv_sec = (stamp_us / 1_000_000) as _;
        b.timestamp.tv_usec = (stamp_us % 1_000_000) as _;
        if q.mplane {
            planes[0].bytesused = bytesused as u32;
            planes[0].length = self.maps[slot(q)].get(index).map_or(0, |m| m.len as u32);
            b.m.planes = planes.as_mut_ptr();
            b.length = 1;
        } else {
            b.bytesused = bytesused as u32;
        }
        self.ioctl(vidioc::VIDIOC_QBUF, &mut b)
    }

    fn dequeue(&mut self, q: Queue) -> io::Result<Option<Dequeued>> {
        // SAFETY: a kernel struct of plain data.
        let mut planes = [unsafe { zeroed::<v4l2_plane>() }; 1];
        // SAFETY: a kernel struct of plain data.
        let mut b = unsafe { zeroed::<v4l2_buffer>() };
        (b.type_, b.memory) = (q.buf_type(), MEMORY_MMAP);
        if q.mplane {
            b.m.planes = planes.as_mut_ptr();
            b.length = 1;
        }
        match self.ioctl(vidioc::VIDIOC_DQBUF, &mut b) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
            r => r?,
        }
        let (offset, used) = if q.mplane {
            (planes[0].data_offset as usize, planes[0].bytesused as usize)
        } else {
            (0, b.bytesused as usize)
        };
        let stamp_us = (b.timestamp.tv_sec as u64).saturating_mul(1_000_000) + b.timestamp.tv_usec as u64;
        Ok(Some(Dequeued { index: b.index as usize, offset, bytesused: used, flags: b.flags, stamp_us }))
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let t = Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos().into() };
        // Ready, timed out, interrupted or POLLERR (nothing queued, not streaming): the DQBUF
        // that follows says which.
        match poll(&mut fds, Some(&t)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn stream(&mut self, q: Queue, on: bool) -> io::Result<()> {
        let mut t = q.buf_type() as libc::c_int;
        self.ioctl(if on { vidioc::VIDIOC_STREAMON } else { vidioc::VIDIOC_STREAMOFF }, &mut t)
    }
}

impl Drop for Sys {
    fn drop(&mut self) {
        // The encoder stops the streams and frees its buffers; mappings left by an error on
        // the way go here, before the descriptor closes.
        self.unmap(0);
        self.unmap(1);
    }
}
