package deploy

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// manifests use; decoding is strict, so a field this does not know (a
// typo, or one the operator would ignore) fails.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path,omitempty"`
			Interval    string `json:"interval,omitempty"`
			HonorLabels bool   `json:"honorLabels,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule is monitoring.coreos.com/v1 PrometheusRule, likewise.
type prometheusRule struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// manifests is one kustomization rendered and decoded into typed objects.
type manifests struct {
	dir         string
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	ingresses   map[string]*networkingv1.Ingress
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	cronJobs    map[string]*batchv1.CronJob
	monitors    map[string]*serviceMonitor
	rules       map[string]*prometheusRule
	namespaces  map[string]bool // metadata.namespace of every object
}

// render runs kustomize (the library kubectl -k is built on) on
// deploy/k8s/<dir> and decodes every object strictly.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	full := filepath.Join(root(t), "deploy", "k8s", dir)
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), full)
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/%s: %v", dir, err)
	}
	m := &manifests{
		dir:         dir,
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		configMaps:  map[string]*corev1.ConfigMap{},
		ingresses:   map[string]*networkingv1.Ingress{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
		hpas:        map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		cronJobs:    map[string]*batchv1.CronJob{},
		monitors:    map[string]*serviceMonitor{},
		rules:       map[string]*prometheusRule{},
		namespaces:  map[string]bool{},
	}
	for _, r := range res.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetApiVersion() + "/" + r.GetKind()
		name := r.GetName()
		m.namespaces[r.GetNamespace()] = true
		var obj any
		switch gvk {
		case "apps/v1/Deployment":
			obj = into(m.deployments, name)
		case "v1/Service":
			obj = into(m.services, name)
		case "v1/ConfigMap":
			obj = into(m.configMaps, name)
		case "networking.k8s.io/v1/Ingress":
			obj = into(m.ingresses, name)
		case "policy/v1/PodDisruptionBudget":
			obj = into(m.pdbs, name)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			obj = into(m.hpas, name)
		case "batch/v1/CronJob":
			obj = into(m.cronJobs, name)
		case "monitoring.coreos.com/v1/ServiceMonitor":
			obj = into(m.monitors, name)
		case "monitoring.coreos.com/v1/PrometheusRule":
			obj = into(m.rules, name)
		default:
			t.Errorf("deploy/k8s/%s: %s %s is a kind this test does not check", dir, gvk, name)
			continue
		}
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			t.Errorf("deploy/k8s/%s: %s %s does not decode strictly: %v", dir, gvk, name, err)
		}
	}
	return m
}

func into[T any](m map[string]*T, name string) *T {
	v := new(T)
	m[name] = v
	return v
}

func get[T any](t *testing.T, m *manifests, objs map[string]*T, kind, name string) *T {
	t.Helper()
	v, ok := objs[name]
	if !ok {
		t.Fatalf("deploy/k8s/%s renders no %s %s", m.dir, kind, name)
	}
	return v
}

// secretTemplate decodes deploy/k8s/secret-template.yaml: secret name →
// its keys.
func secretTemplate(t *testing.T) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "k8s", "secret-template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
			t.Fatalf("secret-template.yaml: %v", err)
		}
		if s.Kind != "Secret" || s.APIVersion != "v1" {
			t.Errorf("secret-template.yaml: %s %s is not a v1 Secret", s.APIVersion, s.Kind)
		}
		keys := map[string]bool{}
		for k := range s.StringData {
			keys[k] = true
		}
		for k := range s.Data {
			keys[k] = true
		}
		out[s.Name] = keys
	}
	return out
}

func stripComments(s string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(s, "")
}

// pod is what checkPod found in one pod template.
type pod struct {
	env   map[string]string // every variable the container gets; "" for secret references
	ports map[string]int32  // container ports by name
	cmd   string            // the command the container runs
	c     corev1.Container
}

// checkPod checks the hardening every pod of wxpay-notify has, that its one
// container runs a command of this repository with only settings it
// knows, and that each *_FILE setting names a key of a read-only mounted
// Secret of the template.
func checkPod(t *testing.T, m *manifests, where string, spec corev1.PodSpec, secrets map[string]map[string]bool) pod {
	t.Helper()
	where = "deploy/k8s/" + m.dir + " " + where
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot is not true", where)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false (no command talks to the Kubernetes API)", where)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("%s: %d containers, %d init containers; want one container", where, len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: container %s has no securityContext", where, c.Name)
	default:
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", where, sc.Capabilities)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("%s: the container overrides runAsNonRoot", where)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", where, r)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.Cmp(c.Resources.Requests[corev1.ResourceMemory]) < 0 {
		t.Errorf("%s: memory limit %v, want one at or above the request", where, c.Resources.Limits.Memory())
	}
	p := pod{env: map[string]string{}, ports: map[string]int32{}, cmd: commandOf(t, c.Command), c: c}
	if !strings.HasPrefix(c.Image, "ghcr.io/wxpay-notify/wxpay-notify:") {
		t.Errorf("%s: image %q, want ghcr.io/wxpay-notify/wxpay-notify:<tag>", where, c.Image)
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || ef.Prefix != "" {
			t.Errorf("%s: envFrom %+v: only ConfigMaps without a prefix (their keys are checked)", where, ef)
			continue
		}
		cm := get(t, m, m.configMaps, "ConfigMap", ef.ConfigMapRef.Name)
		for k, v := range cm.Data {
			p.env[k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			if e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if !secrets[ref.Name][ref.Key] {
					t.Errorf("%s: %s comes from secret %s key %s, which secret-template.yaml does not have", where, e.Name, ref.Name, ref.Key)
				}
			}
			p.env[e.Name] = ""
			continue
		}
		p.env[e.Name] = e.Value
	}
	checkEnvKnown(t, where, p.cmd, sortedKeys(p.env))
	for _, cp := range c.Ports {
		p.ports[cp.Name] = cp.ContainerPort
	}
	// *_FILE: a key of a Secret mounted read-only at the file's directory.
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for k, v := range p.env {
		if !strings.HasSuffix(k, "_FILE") {
			continue
		}
		vm, ok := mounts[path.Dir(v)]
		if !ok {
			t.Errorf("%s: %s=%s: nothing is mounted at %s", where, k, v, path.Dir(v))
			continue
		}
		vol := volumes[vm.Name]
		if vol.Secret == nil || !vm.ReadOnly {
			t.Errorf("%s: %s=%s: %s is not a Secret mounted read-only", where, k, v, vm.MountPath)
			continue
		}
		if !secrets[vol.Secret.SecretName][path.Base(v)] {
			t.Errorf("%s: %s=%s: secret %s in secret-template.yaml has no key %s (it has %v)", where, k, v, vol.Secret.SecretName, path.Base(v), sortedKeys(secrets[vol.Secret.SecretName]))
		}
		if vol.Secret.Items != nil {
			t.Errorf("%s: secret volume %s picks items: mount every key under its own name", where, vm.Name)
		}
	}
	for _, vm := range c.VolumeMounts {
		if v := volumes[vm.Name]; v.Secret != nil && !vm.ReadOnly {
			t.Errorf("%s: secret %s is mounted writable", where, v.Secret.SecretName)
		}
	}
	for k, v := range p.env {
		if strings.HasSuffix(k, "_URL") && strings.Contains(v, "@") {
			t.Errorf("%s: %s in a ConfigMap holds credentials: take it from a Secret", where, k)
		}
	}
	return p
}

// checkProbe checks a probe asks path on the admin port, ADMIN_ADDR's.
func checkProbe(t *testing.T, where, kind string, pr *corev1.Probe, wantPath string, p pod) {
	t.Helper()
	if pr == nil || pr.HTTPGet == nil {
		t.Errorf("%s: no HTTP %s probe", where, kind)
		return
	}
	admin := int32(port(t, where+" ADMIN_ADDR", p.env["ADMIN_ADDR"]))
	got := pr.HTTPGet.Port.IntVal
	if pr.HTTPGet.Port.Type == intstr.String {
		got = p.ports[pr.HTTPGet.Port.StrVal]
	}
	if pr.HTTPGet.Path != wantPath || got != admin {
		t.Errorf("%s: %s probe GET %s on port %v (%d), want %s on the admin port %d (ADMIN_ADDR)", where, kind, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), got, wantPath, admin)
	}
}

func selects(sel *metav1.LabelSelector, lbls map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(lbls))
}

func checkWorkloads(t *testing.T, m *manifests, replicas int32) {
	secrets := secretTemplate(t)
	// The ingress.
	ing := get(t, m, m.deployments, "Deployment", "wxpay-ingress")
	where := "deploy/k8s/" + m.dir + " Deployment wxpay-ingress"
	if ing.Spec.Replicas == nil || *ing.Spec.Replicas != replicas {
		t.Errorf("%s: replicas %v, want %d", where, ing.Spec.Replicas, replicas)
	}
	if !selects(ing.Spec.Selector, ing.Spec.Template.Labels) {
		t.Errorf("%s: the selector does not select its own pods", where)
	}
	p := checkPod(t, m, "Deployment wxpay-ingress", ing.Spec.Template.Spec, secrets)
	if p.cmd != "ingress" {
		t.Errorf("%s runs %s", where, p.cmd)
	}
	checkProbe(t, where, "readiness", p.c.ReadinessProbe, "/readyz", p)
	checkProbe(t, where, "liveness", p.c.LivenessProbe, "/healthz", p)
	listen := int32(port(t, where+" LISTEN_ADDR", p.env["LISTEN_ADDR"]))
	if p.ports["http"] != listen {
		t.Errorf("%s: container port http %d, want LISTEN_ADDR's %d", where, p.ports["http"], listen)
	}
	if ru := ing.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("%s: rollingUpdate %+v, want maxUnavailable 0 (roll one pod at a time without losing capacity)", where, ru)
	}

	svc := get(t, m, m.services, "Service", "wxpay-ingress")
	if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, ing.Spec.Template.Labels) {
		t.Errorf("Service wxpay-ingress does not select the ingress pods")
	}
	svcPorts := map[string]int32{} // service port name → container port
	for _, sp := range svc.Spec.Ports {
		target := sp.TargetPort.IntVal
		if sp.TargetPort.Type == intstr.String {
			target = p.ports[sp.TargetPort.StrVal]
		}
		svcPorts[sp.Name] = target
		if sp.Name == "http" && target != listen {
			t.Errorf("Service wxpay-ingress: port http goes to %d, want the public listener %d", target, listen)
		}
	}

	// The Ingress: TLS, and only /notify reaches the public listener.
	route := get(t, m, m.ingresses, "Ingress", "wxpay-ingress")
	hosts := map[string]bool{}
	for _, tls := range route.Spec.TLS {
		if tls.SecretName == "" {
			t.Error("Ingress: a tls entry without secretName")
		}
		for _, h := range tls.Hosts {
			hosts[h] = true
		}
	}
	if route.Spec.DefaultBackend != nil || len(route.Spec.Rules) == 0 {
		t.Errorf("Ingress: default backend %v, %d rules: want rules only", route.Spec.DefaultBackend, len(route.Spec.Rules))
	}
	for _, r := range route.Spec.Rules {
		if r.Host == "" || !hosts[r.Host] {
			t.Errorf("Ingress: host %q has no TLS (WeChat Pay calls https only)", r.Host)
		}
		if r.HTTP == nil || len(r.HTTP.Paths) == 0 {
			t.Errorf("Ingress: host %q routes nothing", r.Host)
			continue
		}
		for _, hp := range r.HTTP.Paths {
			b := hp.Backend.Service
			if hp.Path != "/notify" && !strings.HasPrefix(hp.Path, "/notify/") {
				t.Errorf("Ingress: path %q is exposed; only /notify paths may be", hp.Path)
			}
			if hp.PathType == nil || *hp.PathType == networkingv1.PathTypeImplementationSpecific {
				t.Errorf("Ingress: path %q has pathType %v, want Prefix or Exact", hp.Path, hp.PathType)
			}
			if b == nil || b.Name != "wxpay-ingress" {
				t.Errorf("Ingress: path %q goes to %+v, want Service wxpay-ingress", hp.Path, b)
				continue
			}
			target := svcPorts[b.Port.Name]
			if b.Port.Name == "" {
				for _, sp := range svc.Spec.Ports {
					if sp.Port == b.Port.Number {
						target = svcPorts[sp.Name]
					}
				}
			}
			if target != listen {
				t.Errorf("Ingress: path %q goes to container port %d, want the public listener %d (never the admin port)", hp.Path, target, listen)
			}
		}
	}

	pdb := get(t, m, m.pdbs, "PodDisruptionBudget", "wxpay-ingress")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PodDisruptionBudget: minAvailable %v, want 1", pdb.Spec.MinAvailable)
	}
	if !selects(pdb.Spec.Selector, ing.Spec.Template.Labels) {
		t.Error("PodDisruptionBudget does not select the ingress pods")
	}

	hpa := get(t, m, m.hpas, "HorizontalPodAutoscaler", "wxpay-ingress")
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != "wxpay-ingress" || ref.APIVersion != "apps/v1" {
		t.Errorf("HorizontalPodAutoscaler scales %+v, want apps/v1 Deployment wxpay-ingress", ref)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != replicas || hpa.Spec.MaxReplicas <= replicas {
		t.Errorf("HorizontalPodAutoscaler: replicas %v to %d, want from the Deployment's %d up", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas, replicas)
	}
	cpu := false
	for _, ms := range hpa.Spec.Metrics {
		if ms.Type == autoscalingv2.ResourceMetricSourceType && ms.Resource != nil && ms.Resource.Name == corev1.ResourceCPU &&
			ms.Resource.Target.Type == autoscalingv2.UtilizationMetricType && ms.Resource.Target.AverageUtilization != nil && *ms.Resource.Target.AverageUtilization > 0 {
			cpu = true
		}
	}
	if !cpu {
		t.Error("HorizontalPodAutoscaler: no CPU utilization target")
	}

	// The worker.
	wk := get(t, m, m.deployments, "Deployment", "wxpay-worker")
	where = "deploy/k8s/" + m.dir + " Deployment wxpay-worker"
	if wk.Spec.Replicas == nil || *wk.Spec.Replicas != replicas {
		t.Errorf("%s: replicas %v, want %d", where, wk.Spec.Replicas, replicas)
	}
	wp := checkPod(t, m, "Deployment wxpay-worker", wk.Spec.Template.Spec, secrets)
	if wp.cmd != "worker" {
		t.Errorf("%s runs %s", where, wp.cmd)
	}
	checkProbe(t, where, "readiness", wp.c.ReadinessProbe, "/readyz", wp)
	checkProbe(t, where, "liveness", wp.c.LivenessProbe, "/healthz", wp)
	for v := range help(t, "worker").required {
		if _, ok := wp.env[v]; !ok {
			t.Errorf("%s: the required %s is not set", where, v)
		}
	}
	if _, ok := wp.env["REDIS_URL"]; !ok {
		t.Errorf("%s: REDIS_URL not set", where)
	}
	if g := wk.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("%s: terminationGracePeriodSeconds %v: running handlers get up to 24s to finish after SIGTERM", where, g)
	}

	// The reconciler's CronJobs.
	schedules := map[string]*batchv1.CronJob{}
	subs := help(t, "reconciler").subcommands
	for name, cj := range m.cronJobs {
		where := "deploy/k8s/" + m.dir + " CronJob " + name
		job := cj.Spec.JobTemplate.Spec
		pp := checkPod(t, m, "CronJob "+name, job.Template.Spec, secrets)
		args := pp.c.Args
		if pp.cmd != "reconciler" || len(args) != 1 || !slices.Contains(subs, args[0]) {
			t.Errorf("%s runs %s %v, want the reconciler with one of %v", where, pp.cmd, args, subs)
			continue
		}
		schedules[args[0]] = cj
		if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			t.Errorf("%s: concurrencyPolicy %q, want Forbid", where, cj.Spec.ConcurrencyPolicy)
		}
		if cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Asia/Shanghai" {
			t.Errorf("%s: timeZone %v, want Asia/Shanghai (WeChat Pay's days are China days)", where, cj.Spec.TimeZone)
		}
		if job.BackoffLimit == nil || *job.BackoffLimit < 1 {
			t.Errorf("%s: backoffLimit %v, want retries (exit 1 is worth repeating)", where, job.BackoffLimit)
		}
		if job.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy %q, want Never", where, job.Template.Spec.RestartPolicy)
		}
		failsJob := map[int32]bool{}
		if pfp := job.PodFailurePolicy; pfp != nil {
			for _, r := range pfp.Rules {
				if r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil && r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn {
					for _, v := range r.OnExitCodes.Values {
						failsJob[v] = true
					}
				}
			}
		}
		if !failsJob[2] || !failsJob[3] || failsJob[1] {
			t.Errorf("%s: podFailurePolicy fails the job at once on exit codes %v, want 2 (settings) and 3 (bills differ), not 1 (worth a retry)", where, sortedKeys(intKeys(failsJob)))
		}
		if _, ok := pp.env["REDIS_URL"]; !ok {
			t.Errorf("%s: REDIS_URL not set", where)
		}
		if dir := pp.env["RECONCILE_BILL_DIR"]; !slices.ContainsFunc(pp.c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == dir && !vm.ReadOnly }) {
			t.Errorf("%s: RECONCILE_BILL_DIR %q is not a writable mount (the root file system is read-only)", where, dir)
		}
		if pp.env["RECONCILE_PUSHGATEWAY"] == "" {
			t.Errorf("%s: RECONCILE_PUSHGATEWAY not set: the reconciler alerts would have nothing to read", where)
		}
	}
	if cj := schedules["orders"]; cj == nil || cj.Spec.Schedule != "*/5 * * * *" {
		t.Errorf("the orders CronJob: %v, want schedule */5 * * * *", cronSchedule(cj))
	}
	if cj := schedules["bills"]; cj == nil || !afterTen(cj.Spec.Schedule) {
		t.Errorf("the bills CronJob: %v, want once a day after 10:00 China time (WeChat makes the bills from 09:00)", cronSchedule(cj))
	}
}

func intKeys(m map[int32]bool) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[strconv.Itoa(int(k))] = true
	}
	return out
}

func cronSchedule(cj *batchv1.CronJob) string {
	if cj == nil {
		return "missing"
	}
	return "schedule " + cj.Spec.Schedule
}

// afterTen reports whether a cron schedule runs once a day, at a fixed
// minute of an hour from 10 to 23.
func afterTen(s string) bool {
	f := strings.Fields(s)
	if len(f) != 5 || f[2] != "*" || f[3] != "*" || f[4] != "*" {
		return false
	}
	minute, err1 := strconv.Atoi(f[0])
	hour, err2 := strconv.Atoi(f[1])
	return err1 == nil && err2 == nil && minute >= 0 && minute < 60 && hour >= 10 && hour < 24
}

func TestKubernetesBase(t *testing.T) {
	m := render(t, "base")
	for ns := range m.namespaces {
		if ns != "" {
			t.Errorf("deploy/k8s/base sets namespace %q: the base is namespace-free", ns)
		}
	}
	checkWorkloads(t, m, 2)
	checkConfig(t, m, "1")
	checkMonitoring(t, m)
}

func TestKubernetesProduction(t *testing.T) {
	base := render(t, "base")
	m := render(t, "overlays/production")
	checkWorkloads(t, m, 3)
	checkConfig(t, m, "3")
	checkMonitoring(t, m)
	images := map[string]bool{}
	for name, d := range m.deployments {
		images[d.Spec.Template.Spec.Containers[0].Image] = true
		b := base.deployments[name].Spec.Template.Spec.Containers[0].Resources
		o := d.Spec.Template.Spec.Containers[0].Resources
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, bq := o.Requests[r], b.Requests[r]; q.Cmp(bq) <= 0 {
				t.Errorf("production Deployment %s: %s request %s, want more than the base's %s", name, r, q.String(), bq.String())
			}
		}
		if q, bq := o.Limits[corev1.ResourceMemory], b.Limits[corev1.ResourceMemory]; q.Cmp(bq) <= 0 {
			t.Errorf("production Deployment %s: memory limit %s, want more than the base's %s", name, q.String(), bq.String())
		}
	}
	for _, cj := range m.cronJobs {
		images[cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image] = true
	}
	baseImage := base.deployments["wxpay-ingress"].Spec.Template.Spec.Containers[0].Image
	for img := range images {
		_, tag, _ := strings.Cut(img, ":")
		if len(images) != 1 || img == baseImage || tag == "" || tag == "latest" || tag == "dev" {
			t.Errorf("production images %v: want one released tag for every pod, not the base's %s", sortedKeys(images), baseImage)
			break
		}
	}
}

// checkConfig checks the shared settings: STREAM_REPLICAS (3 needs the
// three-server NATS cluster of the production overlay).
func checkConfig(t *testing.T, m *manifests, replicas string) {
	t.Helper()
	cm := get(t, m, m.configMaps, "ConfigMap", "wxpay-config")
	if got := cm.Data["STREAM_REPLICAS"]; got != replicas {
		t.Errorf("deploy/k8s/%s: STREAM_REPLICAS %q, want %q", m.dir, got, replicas)
	}
	if !pointsAt(cm.Data["NATS_URL"], "nats", "4222") {
		t.Errorf("deploy/k8s/%s: NATS_URL %q, want the NATS release's Service nats:4222", m.dir, cm.Data["NATS_URL"])
	}
	for name, c := range m.configMaps {
		for k := range c.Data {
			for _, cmd := range knownCommands {
				if help(t, cmd).secretEnv[k] {
					t.Errorf("deploy/k8s/%s: ConfigMap %s holds the secret %s: use a Secret file and %s_FILE", m.dir, name, k, k)
				}
			}
		}
	}
}

// checkMonitoring checks the ServiceMonitor scrapes both commands' admin
// ports and the alerts exist and read metrics the code exports.
func checkMonitoring(t *testing.T, m *manifests) {
	t.Helper()
	sm := get(t, m, m.monitors, "ServiceMonitor", "wxpay-notify")
	for _, name := range []string{"wxpay-ingress", "wxpay-worker"} {
		svc := get(t, m, m.services, "Service", name)
		if !selects(&sm.Spec.Selector, svc.Labels) {
			t.Errorf("ServiceMonitor does not select Service %s", name)
			continue
		}
		scraped := false
		for _, ep := range sm.Spec.Endpoints {
			for _, sp := range svc.Spec.Ports {
				if sp.Name == ep.Port && sp.TargetPort.StrVal == "admin" && (ep.Path == "" || ep.Path == "/metrics") {
					scraped = true
				}
			}
		}
		if !scraped {
			t.Errorf("ServiceMonitor scrapes no admin port /metrics of Service %s", name)
		}
	}
	rules := alertRules(t, m)
	known := knownMetrics(t)
	nameRe := regexp.MustCompile(`\bwxpay_[a-z0-9_]+`)
	for _, r := range rules {
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("alert %s: want a severity label and a summary", r.Alert)
		}
		for _, n := range nameRe.FindAllString(r.Expr, -1) {
			if !known[n] {
				t.Errorf("alert %s reads %s, which no command exports (known: %v)", r.Alert, n, sortedKeys(known))
			}
		}
	}
	want := map[string]*regexp.Regexp{
		"oldest unacknowledged event": regexp.MustCompile(`wxpay_worker_oldest_unacked_seconds`),
		"dead letters":                regexp.MustCompile(`increase\(wxpay_worker_dead_letters_total\[`),
		"signature failures":          regexp.MustCompile(`wxpay_ingress_requests_total\{[^}]*outcome="bad_signature"`),
		"bills differ (exit 3)":       regexp.MustCompile(`wxpay_reconciler_last_run_exit_code\)?\s*==\s*3\s*$`),
		"reconciler not succeeding":   regexp.MustCompile(`wxpay_reconciler_last_run_success\)?\s*==\s*0`),
	}
	for what, re := range want {
		if !slices.ContainsFunc(rules, func(r rule) bool { return re.MatchString(strings.TrimSpace(r.Expr)) }) {
			t.Errorf("no alert on %s (an expression matching %s)", what, re)
		}
	}
}

func alertRules(t *testing.T, m *manifests) []rule {
	t.Helper()
	pr := get(t, m, m.rules, "PrometheusRule", "wxpay-notify")
	var out []rule
	seen := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("PrometheusRule: alert %s twice", r.Alert)
			}
			seen[r.Alert] = true
			out = append(out, r)
		}
	}
	return out
}

// TestAlertRulesPromtool checks the rules with promtool, and runs the unit
// tests of testdata/alerts_test.yaml: each alert fires on the series that
// mean trouble, and not on healthy ones.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := requirePromtool(t)
	m := render(t, "base")
	pr := get(t, m, m.rules, "PrometheusRule", "wxpay-notify")
	dir := t.TempDir()
	writeRules := func(file string, groups []ruleGroup) {
		t.Helper()
		data, err := yaml.Marshal(map[string]any{"groups": groups})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// check rules: the rules as deployed, annotation templates included.
	writeRules("deployed.yaml", pr.Spec.Groups)
	// The unit tests compare labels; promtool would also compare every
	// annotation, whose wording is not what they test.
	var bare []ruleGroup
	for _, g := range pr.Spec.Groups {
		g.Rules = slices.Clone(g.Rules)
		for i := range g.Rules {
			g.Rules[i].Annotations = nil
		}
		bare = append(bare, g)
	}
	writeRules("rules.yaml", bare)
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "deployed.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		out, err := runIn(dir, promtool, args...)
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func requirePromtool(t *testing.T) string {
	t.Helper()
	p, err := lookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("WXPAY_TEST_REQUIRE_PROMTOOL") != "" {
		t.Fatal("WXPAY_TEST_REQUIRE_PROMTOOL is set but promtool is not on PATH (Debian: apt-get install prometheus)")
	}
	t.Skip("promtool is not on PATH: the alert rules were not checked by Prometheus (set WXPAY_TEST_REQUIRE_PROMTOOL to make this an error)")
	return ""
}
