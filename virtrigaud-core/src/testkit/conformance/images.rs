//! The image check: seed 003's own `VMImage`, pointed at a local HTTP server, prepared into
//! the provider's storage through its [`ImageSink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{CheckOutcome, Fixture};
use crate::model::{Checksum, ImagePhase, VMImage, from_yaml_str};
use crate::orchestration::image::{
    HttpSource, ImagePreparer, ImageSink, ImageTarget, PrepareOptions,
};
use crate::provider::Provider;

/// Seed 003's `VMImage` (vSphere and libvirt sources, `prepare` with `onMissing: Import`,
/// `validateChecksum`, `timeout: 30m`, `retries: 3`).
const SEED_IMAGE: &str = include_str!("../../../tests/fixtures/seeds/003_10_vmimage.yaml");

/// The served image: 2 MiB and a few bytes of a fixed pattern (for an OVA source, the disk
/// file inside the served OVA).
const IMAGE_LEN: usize = (2 << 20) + 17;

/// How the local server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Serve {
    /// The image, whole.
    Whole,
    /// `503 Service Unavailable`, every time.
    Unavailable,
    /// Half the image, then nothing more (the connection stays open).
    Stall,
}

/// The seed's VMImage, its source URL and checksum pointed at a local HTTP server serving a
/// small raw image (a small OVA where the provider's source is one, vSphere's `ovaURL`), is
/// prepared into the provider's storage with the seed's `prepare` options: it becomes
/// `Ready`, the sink finds it with the served size, and a second preparation finds it
/// without downloading again. A checksum mismatch, a server answering 503 through every
/// retry, and a transfer that stalls each fail cleanly, leaving nothing in the provider's
/// storage. Skipped where `image_import` is declared false; a provider that
/// declares it needs a fixture with an [`ImageSink`] ([`Fixture::image_sink`]).
pub async fn image_import_from_the_seed(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().image_import {
        return CheckOutcome::Skipped("image_import is declared false".into());
    }
    let Some(sink) = attempt!(fixture.image_sink().await, "fixture.image_sink") else {
        return CheckOutcome::Failed(
            "image_import is declared, but the fixture gives no image sink".into(),
        );
    };
    let data = Arc::new(attempt!(
        served_image(provider.provider_type()),
        "the served image"
    ));
    let base = format!("vrconf-img-{}", std::process::id());
    let names = ["ok", "badsum", "unavailable", "stall"].map(|n| format!("{base}-{n}"));
    let outcome = import_and_fail_cleanly(provider.provider_type(), &sink, &data, &names).await;
    for n in &names {
        let _ = sink.remove(&ImageTarget::new(n.as_str())).await;
    }
    outcome
}

async fn import_and_fail_cleanly(
    provider_type: &str,
    sink: &Arc<dyn ImageSink>,
    data: &Arc<Vec<u8>>,
    names: &[String; 4],
) -> CheckOutcome {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data.as_slice())));
    let good: Checksum = attempt!(digest.parse(), "checksum");
    let wrong: Checksum = attempt!(
        format!("sha256:{}", hex::encode(Sha256::digest(b"another image"))).parse(),
        "checksum"
    );
    let preparer = ImagePreparer::new(Arc::clone(sink));

    // The image, imported once.
    let (url, hits) = attempt!(serve(Arc::clone(data), Serve::Whole).await, "serve");
    let mut image = attempt!(seed_image(&names[0], &url, &good), "the seed's VMImage");
    let Some(download) = image.spec.download_for(provider_type) else {
        return CheckOutcome::Failed(format!("the seed gives {provider_type} no download"));
    };
    ensure!(download.url == url, "download_for gave {}", download.url);
    let target = ImageTarget::for_image(&image, provider_type);
    let source = attempt!(HttpSource::new(&download.url), "HttpSource");
    let opts = options(&image, download.checksum.clone());
    let report = attempt!(
        preparer.prepare(&mut image, &target, &source, &opts).await,
        "prepare the seed's image"
    );
    let phase = image.status.as_ref().and_then(|s| s.phase);
    ensure!(
        report.imported && phase == Some(ImagePhase::Ready),
        "imported {}, phase {phase:?}",
        report.imported
    );
    let served = data.len() as u64;
    ensure!(
        report.image.size_bytes == served,
        "stored {} bytes, served {served}",
        report.image.size_bytes
    );
    let found = attempt!(sink.lookup(&target).await, "lookup");
    ensure!(
        found.as_ref().map(|r| r.size_bytes) == Some(served),
        "lookup after the import found {found:?}"
    );
    let before = hits.load(Ordering::SeqCst);
    let again = attempt!(
        preparer.prepare(&mut image, &target, &source, &opts).await,
        "prepare again"
    );
    ensure!(
        !again.imported && hits.load(Ordering::SeqCst) == before,
        "a second preparation downloaded again"
    );

    // Three failures, each leaving nothing behind.
    let cases = [
        (&names[1], Serve::Whole, &wrong, "a checksum mismatch"),
        (
            &names[2],
            Serve::Unavailable,
            &good,
            "503 through every retry",
        ),
        (&names[3], Serve::Stall, &good, "a stalled transfer"),
    ];
    for (name, how, sum, what) in cases {
        let (url, _) = attempt!(serve(Arc::clone(data), how).await, "serve");
        let mut image = attempt!(seed_image(name, &url, sum), "the seed's VMImage");
        let target = ImageTarget::for_image(&image, provider_type);
        let source = attempt!(HttpSource::new(&url), "HttpSource");
        let mut opts = options(&image, Some(sum.clone()));
        opts.retries = opts.retries.min(2);
        let res = preparer.prepare(&mut image, &target, &source, &opts).await;
        ensure!(res.is_err(), "{what} was prepared: {res:?}");
        let phase = image.status.as_ref().and_then(|s| s.phase);
        ensure!(
            phase == Some(ImagePhase::Failed),
            "after {what} the image is {phase:?}"
        );
        let left = attempt!(sink.lookup(&target).await, "lookup");
        ensure!(left.is_none(), "{what} left {left:?} in the storage");
    }
    CheckOutcome::Passed
}

/// The seed's placeholder checksum (not a valid digest: the seed does not parse as it is).
const SEED_PLACEHOLDER_CHECKSUM: &str = "sha256:abcd1234...";

/// The seed's image named `name`, every source's URL and checksum pointed at `url` (the
/// seed's placeholder checksum replaced before parsing), the libvirt source's format `raw`
/// (what the server serves).
pub(super) fn seed_image(name: &str, url: &str, checksum: &Checksum) -> crate::Result<VMImage> {
    let text = SEED_IMAGE.replace(SEED_PLACEHOLDER_CHECKSUM, &checksum.to_string());
    let mut image: VMImage = from_yaml_str(&text).map_err(crate::Error::from)?;
    image.metadata.name = name.to_owned();
    if let Some(l) = image.spec.libvirt.as_mut() {
        l.url = Some(url.to_owned());
        l.checksum = Some(checksum.clone());
        l.format = Some("raw".into());
    }
    if let Some(v) = image.spec.vsphere.as_mut() {
        v.ova_url = Some(url.to_owned());
        v.checksum = Some(checksum.clone());
    }
    let proxmox =
        serde_json::json!({"url": url, "format": "raw", "checksum": checksum.to_string()});
    image.spec.proxmox = Some(
        serde_json::from_value(proxmox)
            .map_err(|e| crate::Error::internal(format!("the Proxmox source: {e}")))?,
    );
    Ok(image)
}

/// The seed's `prepare` options, with short delays: retries 10 ms apart, a stall after 2 s.
pub(super) fn options(image: &VMImage, checksum: Option<Checksum>) -> PrepareOptions {
    let mut o = PrepareOptions::from_spec(image.spec.prepare.as_ref(), checksum);
    o.retry_delay = Duration::from_millis(10);
    o.max_retry_delay = Duration::from_millis(50);
    o.stall_timeout = Duration::from_secs(2);
    o
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Whether a download's format names an OVA appliance.
fn is_ova(format: Option<&str>) -> bool {
    format.is_some_and(|f| f.trim().eq_ignore_ascii_case("ova"))
}

/// What the server serves to a provider of type `provider_type`: an OVA ([`ova`]) when the
/// seed's download for it is one (vSphere's `ovaURL`), the raw pattern otherwise.
pub(super) fn served_image(provider_type: &str) -> crate::Result<Vec<u8>> {
    let any: Checksum = format!("sha256:{}", hex::encode(Sha256::digest(b"")))
        .parse()
        .map_err(|e| crate::Error::internal(format!("checksum: {e}")))?;
    let image = seed_image("probe", "http://127.0.0.1/probe", &any)?;
    let format = image
        .spec
        .download_for(provider_type)
        .and_then(|d| d.format);
    Ok(if is_ova(format.as_deref()) {
        ova(&pattern(IMAGE_LEN))
    } else {
        pattern(IMAGE_LEN)
    })
}

/// The OVF descriptor of [`ova`]: one `VirtualSystem` with 1 vCPU, 128 MiB, an LSI Logic
/// SCSI controller and one 1 GiB disk backed by the archive's `vrconf-image-disk1.vmdk` of
/// `disk_len` bytes.
fn ovf_descriptor(disk_len: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:id="file1" ovf:href="vrconf-image-disk1.vmdk" ovf:size="{disk_len}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vrconf-image">
    <Info>The conformance check's image</Info>
    <Name>vrconf-image</Name>
    <OperatingSystemSection ovf:id="101" ovf:osType="otherLinux64Guest">
      <Info>Linux</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>1 vCPU, 128 MiB, one disk</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>vrconf-image</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>128 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>128</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// A small valid OVA: a ustar archive whose first entry is the OVF descriptor
/// `vrconf-image.ovf` ([`ovf_descriptor`]), followed by its disk file
/// `vrconf-image-disk1.vmdk` holding `disk`.
fn ova(disk: &[u8]) -> Vec<u8> {
    let descriptor = ovf_descriptor(disk.len());
    let mut out = Vec::with_capacity(disk.len() + descriptor.len() + 4 * 512);
    for (name, data) in [
        ("vrconf-image.ovf", descriptor.as_bytes()),
        ("vrconf-image-disk1.vmdk", disk),
    ] {
        out.extend_from_slice(&ustar_header(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // The end of the archive: two zero blocks.
    out.resize(out.len() + 1024, 0);
    out
}

/// The 512-byte ustar header of a regular file `name` (at most 99 bytes) of `size` bytes.
fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(99);
    h[..n].copy_from_slice(&name.as_bytes()[..n]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is the byte sum with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Serves `data` at `http://127.0.0.1:<port>/image.raw` as `how` says (the name does not
/// matter to the preparer); returns the URL and
/// a count of requests.
pub(super) async fn serve(
    data: Arc<Vec<u8>>,
    how: Serve,
) -> std::io::Result<(String, Arc<AtomicU32>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/image.raw", listener.local_addr()?);
    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(sock, Arc::clone(&data), how));
        }
    });
    Ok((url, hits))
}

async fn answer(sock: TcpStream, data: Arc<Vec<u8>>, how: Serve) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut from = 0usize;
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    if how == Serve::Unavailable {
        let head =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return wr.write_all(head.as_bytes()).await;
    }
    let from = from.min(data.len());
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
            data.len() - from,
            data.len() - 1,
            data.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            data.len()
        )
    };
    wr.write_all(head.as_bytes()).await?;
    if how == Serve::Stall {
        let half = (data.len() / 2).max(from);
        wr.write_all(&data[from..half]).await?;
        wr.flush().await?;
        // Holds the connection open without sending more, until the client gives up.
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut rest).await;
        return Ok(());
    }
    wr.write_all(&data[from..]).await
}
