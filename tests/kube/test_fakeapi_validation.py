"""The fake API server holds custom objects to their CRD's openAPIV3Schema as a real server does:
every create, update and patch (main resource and /status) is validated and refused with
upstream's 422, unknown fields are pruned (Warn, the default: a Warning header each) or refused
(fieldValidation=Strict). Each test pins the exact answer; tests/fakeapi/README.md maps each to
the upstream function it follows. The schema rules themselves are tests/manifests' business."""
from __future__ import annotations

import http.client
import json

import pytest
from kubernetes import client as k8s

from plumber_agent.cluster import KubeStatusSink
from plumber_agent.models import status as status_models
from tests.fakeapi import HOSTNETWORKS, NODES, TEMPLATES
from tests.fakeapi.server import ApiError
from tests.kube.test_fakeapi import Http
from tests.kube.test_fakeapi_upstream import CR, GROUP, JSON_PATCH, MERGE, failure, refused

VERSION = "v1"
HNT_KIND = f"HostNetworkTemplate.{GROUP}"
HN_KIND = f"HostNetwork.{GROUP}"
BAD_MTU_TYPE = ('Invalid value: "string": spec.interfaceConfig[0].mtu in body must be of type '
                'integer: "string"')


@pytest.fixture
def api(fake_api):
    return Http(fake_api)


def template(name="t1", **spec):
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetworkTemplate",
            "metadata": {"name": name}, "spec": spec}


def hostnetwork(name="n1"):
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HostNetwork",
            "metadata": {"name": name}, "spec": {}}


def create_template(kube, body, **options):
    return kube._call(kube.custom.create_cluster_custom_object, GROUP, VERSION, TEMPLATES, body,
                      write=True, **options)


def replace_template(kube, name, body):
    return kube._call(kube.custom.replace_cluster_custom_object, GROUP, VERSION, TEMPLATES, name,
                      body, write=True)


def patch_template(kube, name, body, content_type=MERGE):
    return kube._call(kube.custom.patch_cluster_custom_object, GROUP, VERSION, TEMPLATES, name,
                      body, write=True, _content_type=content_type)


def invalid(kind, name, causes):
    """The Status of errors.NewInvalid: one cause per error, the message lists them."""
    texts = [f"{field}: {message}" for _, message, field in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    plain_kind, _, group = kind.partition(".")
    return failure(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', {
        "name": name, "group": group, "kind": plain_kind, "causes": [
            {"reason": reason, "message": message, "field": field}
            for reason, message, field in causes]})


CEL_NOT_CHECKED = ("FieldValueInvalid", "Invalid value: null: some validation rules were not "
                   "checked because the object was invalid; correct the existing errors to "
                   "complete validation", "<nil>")


def warnings_of(headers_list):
    return [value for key, value in headers_list if key.lower() == "warning"]


def raw(api, method, path, body, content_type="application/json"):
    """(status, body, headers as a list) over raw HTTP: Http.call's dict would keep only one
    of several Warning headers."""
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request(method, path, body=json.dumps(body), headers={
        "Content-Type": content_type, "Authorization": f"Bearer {api.token}"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data, resp.getheaders()


# ---------------------------------------------------------------- validation: 422 Invalid
def test_create_answers_one_422_with_a_cause_per_violation(fake_api, kube):
    """customResourceStrategy.Validate: ObjectMeta, then kube-openapi
    (kubeOpenAPIResultToFieldErrors: type errors are FieldValueTypeInvalid, enums FieldValueNotSupported, maxLength
    FieldValueTooLong), then listtype (FieldValueDuplicate); errors.NewInvalid gathers them."""
    body = template(nodeSelector={"a": "x" * 64},
                    interfaceConfig=[{"name": "eth0", "mtu": "9000"}, {"name": "eth0", "mtu": 10},
                                     {"mtu": 1500}],
                    ovsConfig=[{"bridgeName": "br0", "params": {"bondMode": "fast"}}])
    expected = invalid(HNT_KIND, "t1", [
        ("FieldValueTooLong", "Too long: may not be more than 63 bytes", "spec.nodeSelector.a"),
        ("FieldValueTypeInvalid", BAD_MTU_TYPE, "spec.interfaceConfig[0].mtu"),
        ("FieldValueInvalid", "Invalid value: 10: spec.interfaceConfig[1].mtu in body should be "
                              "greater than or equal to 68", "spec.interfaceConfig[1].mtu"),
        ("FieldValueRequired", "Required value", "spec.interfaceConfig[2].name"),
        ("FieldValueNotSupported", 'Unsupported value: "fast": supported values: '
                                   '"active-backup", "balance-slb", "balance-tcp"',
         "spec.ovsConfig[0].params.bondMode"),
        ("FieldValueDuplicate", 'Duplicate value: map[string]interface {}{"name":"eth0"}',
         "spec.interfaceConfig[1]"),
        # strategy.go hasBlockingErr: the CRD's CEL rules are not run after those errors.
        CEL_NOT_CHECKED])
    assert refused(create_template, kube, body)[:2] == (422, expected)
    assert fake_api.get(TEMPLATES, "t1") is None


def test_one_violation_has_no_brackets_and_metadata_errors_come_first(kube):
    """errors.NewInvalid: a single error is the message without [ ]; ValidateObjectMetaAccessor
    runs before the schema (FieldValueTooMany for maxProperties, a blocking error after which
    the CEL rules are not run)."""
    low = template(interfaceConfig=[{"name": "eth0", "mtu": 10}])
    assert refused(create_template, kube, low)[:2] == (422, invalid(HNT_KIND, "t1", [
        ("FieldValueInvalid", "Invalid value: 10: spec.interfaceConfig[0].mtu in body should be "
                              "greater than or equal to 68", "spec.interfaceConfig[0].mtu")]))
    labels = {f"k{i}": "v" for i in range(65)}
    assert refused(create_template, kube, template(nodeSelector=labels))[:2] == (422, invalid(
        HNT_KIND, "t1", [("FieldValueTooMany", "Too many: 65: must have at most 64 items",
                          "spec.nodeSelector"), CEL_NOT_CHECKED]))
    bad_name = template(name="Bad_Name", interfaceConfig=[{"name": "eth0", "mtu": "9000"}])
    status, body, _ = refused(create_template, kube, bad_name)
    assert status == 422
    assert [c["field"] for c in body["details"]["causes"]] == [
        "metadata.name", "spec.interfaceConfig[0].mtu", "<nil>"]


def test_update_and_patch_are_validated_and_nothing_is_written(fake_api, kube):
    """customResourceStrategy.ValidateUpdate on PUT, merge patch and JSON patch alike."""
    created = create_template(kube, template(interfaceConfig=[{"name": "eth0"}]))
    rv = created["metadata"]["resourceVersion"]
    bad = [{"name": "eth0", "mtu": "9000"}]
    expected = (422, invalid(HNT_KIND, "t1", [
        ("FieldValueTypeInvalid", BAD_MTU_TYPE, "spec.interfaceConfig[0].mtu")]))
    assert refused(replace_template, kube, "t1",
                   {**created, "spec": {"interfaceConfig": bad}})[:2] == expected
    assert refused(patch_template, kube, "t1", {"spec": {"interfaceConfig": bad}})[:2] == expected
    assert refused(patch_template, kube, "t1", [
        {"op": "add", "path": "/spec/interfaceConfig/0/mtu", "value": "9000"}],
        JSON_PATCH)[:2] == expected
    assert fake_api.resource_version == rv


def test_status_writes_validate_only_the_status(fake_api, kube):
    """statusStrategy.ValidateUpdate -> ValidateStatusUpdate: only `status`, against the status
    schema (rooted there: kube-openapi names `interfaceStatus[0].mtu`, the field error adds
    `status.`), on merge patch and PUT of /status."""
    kube.create_hostnetwork(hostnetwork())
    expected = (422, invalid(HN_KIND, "n1", [
        ("FieldValueTypeInvalid", 'Invalid value: "string": interfaceStatus[0].mtu in body must '
                                  'be of type integer: "string"', "status.interfaceStatus[0].mtu"),
        ("FieldValueInvalid", "Invalid value: -1: summary.interfaces in body should be greater "
                              "than or equal to 0", "status.summary.interfaces")]))
    bad = {"interfaceStatus": [{"pfName": "eth0", "mtu": "x"}], "summary": {"interfaces": -1}}
    assert refused(kube.patch_hostnetwork_status, "n1", {"status": bad})[:2] == expected
    current = kube.get_hostnetwork("n1")
    assert refused(kube._call, kube.custom.replace_cluster_custom_object_status, GROUP, VERSION,
                   HOSTNETWORKS, "n1", {**current, "status": bad}, write=True)[:2] == expected
    assert "status" not in fake_api.get(HOSTNETWORKS, "n1")


def test_unchanged_invalid_values_are_ratcheted(fake_api, kube):
    """CRDValidationRatcheting (ratchetingValueValidator): an update is not refused for a value
    that was already invalid and did not change; a changed value is validated."""
    # A real server refuses this; we bypass the schema to store an object an older, laxer CRD
    # could have let in.
    fake_api.skip_schema_validation(TEMPLATES, "t1")
    create_template(kube, template(interfaceConfig=[{"name": "eth0", "mtu": "9000"}]))
    fake_api.skip_schema_validation(TEMPLATES, "t1", skip=False)
    labelled = patch_template(kube, "t1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["labels"] == {"a": "b"}
    both = patch_template(kube, "t1", {"spec": {"nodeSelector": {"x": "y"}}})
    assert both["metadata"]["generation"] == 2
    assert refused(patch_template, kube, "t1", {"spec": {"interfaceConfig": [
        {"name": "eth0", "mtu": "1500"}]}})[0] == 422


# ---------------------------------------------------------------- unknown fields
def test_unknown_fields_are_pruned_with_a_warning_by_default(fake_api, api):
    """No fieldValidation: handlers/rest.go defaults to Warn; the CRD's schemaCoercingDecoder
    prunes (ObjectMeta's unknown fields first, then the schema's, sorted) and
    addStrictDecodingWarnings sends `Warning: 299 - "unknown field \\"...\\""` per field."""
    body = template(zz=1, interfaceConfig=[{"name": "eth0", "bogus": True}])
    body["metadata"]["extra"] = "x"
    status, created, headers = raw(api, "POST", f"{CR}/{TEMPLATES}", body)
    assert status == 201
    assert created["spec"] == {"interfaceConfig": [{"name": "eth0"}]}
    assert "extra" not in created["metadata"]
    assert warnings_of(headers) == [
        '299 - "unknown field \\"metadata.extra\\""',
        '299 - "unknown field \\"spec.interfaceConfig[0].bogus\\""',
        '299 - "unknown field \\"spec.zz\\""']
    status, patched, headers = raw(api, "PATCH", f"{CR}/{TEMPLATES}/t1",
                                   {"spec": {"more": 1}}, MERGE)
    assert status == 200 and "more" not in patched["spec"]
    assert warnings_of(headers) == ['299 - "unknown field \\"spec.more\\""']
    assert fake_api.warnings()[-1] == 'unknown field "spec.more"'


def test_status_unknown_fields_are_pruned_too(fake_api, kube):
    """The status write goes through the same decoder: what the agent writes that the CRD does
    not know would silently vanish on a real cluster (and here, with a Warning recorded)."""
    kube.create_hostnetwork(hostnetwork())
    written = kube.patch_hostnetwork_status("n1", {"status": {"ovsError": "x", "newThing": 1}})
    assert written["status"] == {"ovsError": "x"}
    assert fake_api.warnings() == ['unknown field "status.newThing"']


def test_strict_refuses_unknown_fields(fake_api, api):
    """fieldValidation=Strict (kubectl's default): create and update answer 400 from
    transformDecodeError; a patch answers 422 from jsonPatcher (NewInvalid with an empty
    GroupKind and name, the patched object's JSON as the bad value of `patch`)."""
    body = template(zz=1)
    body["metadata"]["extra"] = "x"
    message = ('HostNetworkTemplate in version "v1" cannot be handled as a HostNetworkTemplate: '
               'strict decoding error: unknown field "metadata.extra", unknown field "spec.zz"')
    assert api.call("POST", f"{CR}/{TEMPLATES}?fieldValidation=Strict", body)[:2] == (
        400, failure(400, "BadRequest", message))
    status, created, _ = api.call("POST", f"{CR}/{TEMPLATES}?fieldValidation=Strict", template())
    assert status == 201
    assert api.call("PUT", f"{CR}/{TEMPLATES}/t1?fieldValidation=Strict",
                    {**created, "spec": {"zz": 1}})[:2] == (400, failure(
                        400, "BadRequest", message.replace('"metadata.extra", unknown field ', "")))
    patched = {**created, "spec": {"zz": 1}}
    shown = json.dumps(json.dumps(patched, sort_keys=True, separators=(",", ":")))
    cause = f'Invalid value: {shown}: strict decoding error: unknown field "spec.zz"'
    assert api.call("PATCH", f"{CR}/{TEMPLATES}/t1?fieldValidation=Strict", {"spec": {"zz": 1}},
                    MERGE)[:2] == (422, failure(422, "Invalid", f' "" is invalid: patch: {cause}',
                                                {"causes": [{"reason": "FieldValueInvalid",
                                                             "message": cause,
                                                             "field": "patch"}]}))
    assert fake_api.get(TEMPLATES, "t1")["spec"] == {}


def test_ignore_prunes_silently_and_unknown_directives_are_refused(fake_api, api):
    """fieldValidation=Ignore: pruned, no warning; anything but ""/Ignore/Strict/Warn is 422
    from ValidateCreateOptions (ValidateFieldValidation, supported values sorted)."""
    status, created, headers = raw(api, "POST", f"{CR}/{TEMPLATES}?fieldValidation=Ignore",
                                   template(zz=1))
    assert (status, created["spec"], warnings_of(headers)) == (201, {}, [])
    expected = failure(422, "Invalid", 'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: '
                       'Unsupported value: "strict": supported values: "", "Ignore", "Strict", '
                       '"Warn"', {"group": "meta.k8s.io", "kind": "CreateOptions", "causes": [
                           {"reason": "FieldValueNotSupported", "field": "fieldValidation",
                            "message": 'Unsupported value: "strict": supported values: "", '
                                       '"Ignore", "Strict", "Warn"'}]})
    assert api.call("POST", f"{CR}/{TEMPLATES}?fieldValidation=strict",
                    template("t2"))[:2] == (422, expected)


# ---------------------------------------------------------------- switches and the agent
def test_admin_writes_are_held_to_the_schema_unless_bypassed(fake_api):
    """put_object is kubectl-strict; skip_schema_validation is the explicit way around it."""
    with pytest.raises(ApiError) as info:
        fake_api.put_object(TEMPLATES, template(interfaceConfig=[{"name": "eth0", "mtu": "1"}]))
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    with pytest.raises(ApiError) as info:
        fake_api.put_object(TEMPLATES, template(zz=1))
    assert info.value.code == 400
    # A real server refuses this; we bypass the schema to show the switch lets it through.
    fake_api.skip_schema_validation(TEMPLATES, "t1")
    stored = fake_api.put_object(TEMPLATES, template(zz=1))
    assert stored["spec"] == {"zz": 1}


def test_the_agents_status_passes_the_schema_unchanged(fake_api, kube):
    """What the agent's status model serializes is stored as written: no 422, nothing pruned."""
    s = status_models
    status = s.to_api(s.HostNetworkStatus(
        interface_status=[s.InterfaceStatus(
            pf_name="eno2", mac="b4:96:91:70:19:39", mtu=1500, pci_addr="0000:01:00.1",
            vendor_id="8086", device_id="1572", pf_driver="i40e", sriov_enabled=True,
            sriov_status=s.SriovStatus(total_vfs=64, num_vfs=1, vfs=[s.VfStatus(
                id=0, pci_addr="0000:02:0a.0", vf_driver="iavf", mac="00:00:00:00:00:00",
                vlan=0, qos=0, spoofchk=True, trust=False)]),
            ipv4=s.AddressStatus(address=["10.0.0.1/24"]), kind="device", oper_state="up"),
            s.InterfaceStatus(pf_name="eno2.100", kind="vlan", parent="eno2", vlan_id=100)],
        routes=s.RoutesStatus(ipv4=[s.RouteStatus(dev="eno2", gw="10.0.0.254")]),
        ovs_status=[s.OvsBridgeStatus(name="br0", datapath_type="netdev", managed=True, ports=[
            s.OvsPortStatus(name="bond0", interfaces=["eth1", "eth2"], bond_mode="balance-slb",
                            lacp="off")])],
        templates=[s.TemplateStatus(name="t1", state="Applied", observed_generation=3,
                                    message="ok")],
        conditions=[s.NodeCondition(type="LeaderElectionFailing", status="True",
                                    reason="Forbidden", message="permission denied: ...")]))
    fake_api.put_object(NODES, {"metadata": {"name": "n1"}})
    sink = KubeStatusSink(kube, "n1")
    sink.ensure()
    sink.write(status)
    assert fake_api.get(HOSTNETWORKS, "n1")["status"] == status
    assert fake_api.warnings() == []
    # One status patch, and one metadata patch of the template-results summary (fleet/results.py)
    patches = fake_api.requests(method="PATCH")
    assert sorted((r.path.endswith("/status"), r.status) for r in patches) == [(False, 200),
                                                                                (True, 200)]


def test_status_patch_through_the_client_sees_the_422(kube):
    """The kubernetes client raises ApiException with the Status body: what the agent's sink
    gets when it writes a status a real server refuses."""
    kube.create_hostnetwork(hostnetwork())
    with pytest.raises(k8s.ApiException) as info:
        kube.patch_hostnetwork_status("n1", {"status": {"summary": {"vfs": "many"}}})
    assert info.value.status == 422
    assert json.loads(info.value.body)["details"]["causes"][0]["field"] == "status.summary.vfs"
