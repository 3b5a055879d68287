package authserver

import "k8s.io/apimachinery/pkg/types"

func keyOf(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
