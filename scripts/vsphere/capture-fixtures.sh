#!/bin/bash
# Re-captures the real vcsim SOAP replies that the scripted (wiremock) tests of
# virtrigaud-vsphere replay. Needs a running vcsim (scripts/vsphere/setup.sh).
# Output: virtrigaud-vsphere/tests/fixtures/vcsim-*.xml (replies byte for byte, session
# cookies are not stored). The hand-edited variants (ToolsUnavailable, failed task, slow
# guest) are derived from these and named without the vcsim- prefix.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/../../virtrigaud-vsphere/tests/fixtures"
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
# shellcheck disable=SC1091
source "$STATE/vsphere.env"
URL="$VIRTRIGAUD_VSPHERE_URL"
JAR=$(mktemp); trap 'rm -f "$JAR"' EXIT
VM_NAME="${1:-DC0_H0_VM11}"
soap() { # $1 = fixture name ("" = do not store), $2 = body
  local r
  r=$(curl -s --cacert "$VIRTRIGAUD_VSPHERE_CA_FILE" -b "$JAR" -c "$JAR" \
    -H 'Content-Type: text/xml; charset=utf-8' -H 'SOAPAction: "urn:vim25/6.5"' --data-binary @- "$URL" <<X
<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>$2</soapenv:Body></soapenv:Envelope>
X
)
  [ -n "$1" ] && printf '%s' "$r" > "$OUT/vcsim-$1.xml"
  printf '%s' "$r"
}
val() { sed -n "s:.*<$1[^>]*>\([^<]*\)</$1>.*:\1:p" | head -1; }
PC='<_this type="PropertyCollector">propertyCollector</_this>'
props() { # $1 name $2 type $3 moid $4.. paths
  local name=$1 ty=$2 id=$3; shift 3
  local ps=""; for p in "$@"; do ps="$ps<pathSet>$p</pathSet>"; done
  soap "$name" "<RetrievePropertiesEx xmlns=\"urn:vim25\">$PC<specSet><propSet><type>$ty</type>$ps</propSet><objectSet><obj type=\"$ty\">$id</obj></objectSet></specSet><options/></RetrievePropertiesEx>"
}
soap service-content '<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>' >/dev/null
soap login-invalid '<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>nobody</userName><password>wrong</password></Login>' >/dev/null
soap login "<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">SessionManager</_this><userName>$VIRTRIGAUD_VSPHERE_USER</userName><password>$VIRTRIGAUD_VSPHERE_PASSWORD</password></Login>" >/dev/null
VM=$(soap "" "<FindByInventoryPath xmlns=\"urn:vim25\"><_this type=\"SearchIndex\">SearchIndex</_this><inventoryPath>DC0/vm/$VM_NAME</inventoryPath></FindByInventoryPath>" | val returnval)
echo "capturing with $VM_NAME = $VM"
# make sure it is on
T=$(soap "" "<PowerOnVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">$VM</_this></PowerOnVM_Task>" | val returnval)
props power-on VirtualMachine "$VM" runtime.powerState guest.guestState >/dev/null
props tools VirtualMachine "$VM" guest.toolsRunningStatus >/dev/null
props missing-vm VirtualMachine vm-999999 runtime.powerState >/dev/null
PCX=$(soap create-collector "<CreatePropertyCollector xmlns=\"urn:vim25\">$PC</CreatePropertyCollector>" | val returnval)
soap create-filter "<CreateFilter xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">$PCX</_this><spec><propSet><type>VirtualMachine</type><pathSet>runtime.powerState</pathSet><pathSet>guest.guestState</pathSet></propSet><objectSet><obj type=\"VirtualMachine\">$VM</obj></objectSet></spec><partialUpdates>false</partialUpdates></CreateFilter>" >/dev/null
V=$(soap wait-initial "<WaitForUpdatesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">$PCX</_this><version></version><options><maxWaitSeconds>1</maxWaitSeconds></options></WaitForUpdatesEx>" | val version)
soap wait-empty "<WaitForUpdatesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">$PCX</_this><version>$V</version><options><maxWaitSeconds>1</maxWaitSeconds></options></WaitForUpdatesEx>" >/dev/null
soap shutdown-guest "<ShutdownGuest xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">$VM</_this></ShutdownGuest>" >/dev/null
soap wait-off "<WaitForUpdatesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">$PCX</_this><version>$V</version><options><maxWaitSeconds>1</maxWaitSeconds></options></WaitForUpdatesEx>" >/dev/null
soap destroy-collector "<DestroyPropertyCollector xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">$PCX</_this></DestroyPropertyCollector>" >/dev/null
soap shutdown-guest-off "<ShutdownGuest xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">$VM</_this></ShutdownGuest>" >/dev/null
props power-off VirtualMachine "$VM" runtime.powerState guest.guestState >/dev/null
T=$(soap power-off-task "<PowerOffVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">$VM</_this></PowerOffVM_Task>" | val returnval)
props task-error Task "$T" info.state info.error info.result >/dev/null
T=$(soap power-on-task "<PowerOnVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">$VM</_this></PowerOnVM_Task>" | val returnval)
props task-success Task "$T" info.state info.error info.result >/dev/null
soap current-time '<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>' >/dev/null
soap logout '<Logout xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this></Logout>' >/dev/null
soap not-authenticated '<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>' >/dev/null
ls "$OUT"
