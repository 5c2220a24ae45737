package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"

	"github.com/labctl/labctl/facts"
)

// defaultClassAnnotation marks the default StorageClass.
const defaultClassAnnotation = "storageclass.kubernetes.io/is-default-class"

var (
	secretsGVR         = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	longhornSettingGVR = schema.GroupVersionResource{Group: "longhorn.io", Version: "v1beta2", Resource: "settings"}
)

// Inspect reads what verify checks: Nodes, the names of the Secrets in
// namespaces (metadata only: no Secret value is ever fetched),
// StorageClasses, Longhorn's replica count and data path, Traefik's
// Service and whether Grafana is deployed.
func (c *Client) Inspect(ctx context.Context, namespaces []string) (*facts.API, error) {
	if c.rc == nil {
		return nil, fmt.Errorf("inspect: no REST config")
	}
	a := &facts.API{}
	var err error
	if a.Nodes, err = c.Nodes(ctx); err != nil {
		return nil, fmt.Errorf("list Nodes: %w", err)
	}
	md, err := metadata.NewForConfig(c.rc)
	if err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		l, err := md.Resource(secretsGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list Secrets in %s (names only): %w", ns, err)
		}
		for _, s := range l.Items {
			a.Secrets = append(a.Secrets, ns+"/"+s.Name)
		}
	}
	slices.Sort(a.Secrets)
	scs, err := c.cs.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list StorageClasses: %w", err)
	}
	for _, sc := range scs.Items {
		a.StorageClasses = append(a.StorageClasses, facts.StorageClass{Name: sc.Name, Provisioner: sc.Provisioner, Default: sc.Annotations[defaultClassAnnotation] == "true"})
	}
	if a.Longhorn, err = c.longhorn(ctx); err != nil {
		return nil, err
	}
	svc, err := c.cs.CoreV1().Services(facts.IngressNamespace).Get(ctx, facts.IngressService, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("get Service %s/%s: %w", facts.IngressNamespace, facts.IngressService, err)
	default:
		in := &facts.Service{Namespace: svc.Namespace, Name: svc.Name, Type: string(svc.Spec.Type)}
		for _, i := range svc.Status.LoadBalancer.Ingress {
			if i.IP != "" {
				in.IPs = append(in.IPs, i.IP)
			}
		}
		a.Ingress = in
	}
	_, err = c.cs.AppsV1().Deployments(facts.MonitoringNamespace).Get(ctx, facts.GrafanaName, metav1.GetOptions{})
	switch {
	case err == nil:
		a.Grafana = true
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get Deployment %s/%s: %w", facts.MonitoringNamespace, facts.GrafanaName, err)
	}
	return a, nil
}

// longhorn reads Longhorn's settings, nil when Longhorn is not installed.
func (c *Client) longhorn(ctx context.Context) (*facts.Longhorn, error) {
	dyn, err := dynamic.NewForConfig(c.rc)
	if err != nil {
		return nil, err
	}
	res := dyn.Resource(longhornSettingGVR).Namespace(facts.LonghornNamespace)
	value := func(name string) (string, bool, error) {
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err) || (err != nil && strings.Contains(err.Error(), "the server could not find the requested resource")) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("get Longhorn setting %s: %w", name, err)
		}
		v, _ := u.Object["value"].(string)
		return v, true, nil
	}
	replicas, ok, err := value("default-replica-count")
	if err != nil || !ok {
		return nil, err
	}
	path, _, err := value("default-data-path")
	if err != nil {
		return nil, err
	}
	return &facts.Longhorn{Replicas: replicas, DataPath: path}, nil
}
